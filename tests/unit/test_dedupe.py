"""Dedupe: re-sends within the window are duplicates; concurrency and failures never lose events."""

from __future__ import annotations

import asyncio
import tracemalloc
import uuid

from gateway.dedupe import Deduper


class FakeClock:
    """A clock the test moves by hand (time is an input here, not a collaborator)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_published_key_is_a_duplicate_within_the_window_only() -> None:
    clock = FakeClock()
    dedupe = Deduper(window_seconds=60, max_entries=10, clock=clock)
    assert await dedupe.claim("a")
    dedupe.settle("a", published=True)
    assert not await dedupe.claim("a")
    clock.now += 61
    assert await dedupe.claim("a")


async def test_failed_publish_does_not_hide_the_event() -> None:
    dedupe = Deduper(window_seconds=60, max_entries=10)
    assert await dedupe.claim("a")
    dedupe.settle("a", published=False)
    assert await dedupe.claim("a")


async def test_concurrent_claim_waits_for_the_outcome() -> None:
    dedupe = Deduper(window_seconds=60, max_entries=10)
    assert await dedupe.claim("a")
    second = asyncio.create_task(dedupe.claim("a"))
    await asyncio.sleep(0.01)
    assert not second.done()  # it waits rather than publishing a second copy
    dedupe.settle("a", published=True)
    assert await second is False


async def test_concurrent_claim_takes_over_after_a_failure() -> None:
    dedupe = Deduper(window_seconds=60, max_entries=10)
    assert await dedupe.claim("a")
    second = asyncio.create_task(dedupe.claim("a"))
    await asyncio.sleep(0.01)
    dedupe.settle("a", published=False)
    assert await second is True


async def test_memory_is_bounded_oldest_first() -> None:
    dedupe = Deduper(window_seconds=60, max_entries=3)
    for key in "abcd":
        assert await dedupe.claim(key)
        dedupe.settle(key, published=True)
    assert len(dedupe) == 3
    assert await dedupe.claim("a")  # forgotten: the oldest
    assert not await dedupe.claim("d")


async def test_a_key_remembered_again_after_it_expired_stays_remembered() -> None:
    clock = FakeClock()
    dedupe = Deduper(window_seconds=60, max_entries=10, clock=clock)
    assert await dedupe.claim("a")
    dedupe.settle("a", published=True)
    clock.now += 61
    assert await dedupe.claim("a")  # expired: published again
    dedupe.settle("a", published=True)
    for key in "bcd":  # moves past the key's first place in the order
        assert await dedupe.claim(key)
        dedupe.settle(key, published=True)
    assert not await dedupe.claim("a")
    clock.now += 61
    assert await dedupe.claim("d")
    assert len(dedupe) <= 4


async def test_memory_per_remembered_record_id_stays_near_110_bytes() -> None:
    """The documented bound: `dedupe.max_entries` x about 110 bytes (1,000,000 -> ~110 MB)."""
    count = 50_000
    dedupe = Deduper(window_seconds=3600, max_entries=count)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(count):  # each id made here, as a request makes it, and dropped
            dedupe.settle(str(uuid.uuid4()), published=True)
        per_entry = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert len(dedupe) == count
    assert per_entry < 130, per_entry
