"""The spool's slot files: one per live process, adopted when left behind, none made for nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.kafka.records import OutRecord
from gateway.kafka.spool import Spool, inspect_spool

RECORD = OutRecord("t", b"k", b"v" * 10, (("content-type", b"application/json"),))


async def test_a_second_process_gets_its_own_slot_and_nothing_more(tmp_path: Path) -> None:
    first, second = Spool(tmp_path, 10_000), Spool(tmp_path, 10_000)
    await first.open()
    await second.open()
    try:
        locks = await asyncio.to_thread(lambda: sorted(p.name for p in tmp_path.glob("*.lock")))
        assert locks == ["spool-0.lock", "spool-1.lock"]
        slots = inspect_spool(tmp_path)
        assert [s.path.name for s in slots] == ["spool-0.sqlite3", "spool-1.sqlite3"]
        assert all(slot.held for slot in slots)
    finally:
        await first.close()
        await second.close()


async def test_records_left_by_a_closed_spool_are_adopted_and_read_back(tmp_path: Path) -> None:
    old = Spool(tmp_path, 10_000)
    await old.open()
    await old.append([RECORD, RECORD])
    await old.close()  # like a process that died: its records stay on disk
    (shown,) = [s for s in inspect_spool(tmp_path) if s.records]
    assert (shown.records, shown.held) == (2, False)

    new = Spool(tmp_path, 10_000)
    await new.open()
    try:
        assert new.depth == 2
        batch = await new.peek(10)
        assert [s.record for s in batch] == [RECORD, RECORD]  # headers and key survive
        await new.remove(batch)
        assert new.depth == 0
    finally:
        await new.close()


async def test_slots_left_empty_are_removed_with_their_lock_files(tmp_path: Path) -> None:
    def files() -> list[str]:
        return sorted(p.name for p in tmp_path.iterdir())

    for _ in range(3):  # restarts, `gateway spool --drain` runs: nothing piles up
        spool = Spool(tmp_path, 10_000)
        await spool.open()
        await spool.append([RECORD])
        await spool.remove(await spool.peek(10))
        await spool.close()
        assert await asyncio.to_thread(files) == []

    kept = Spool(tmp_path, 10_000)
    await kept.open()
    await kept.append([RECORD])
    await kept.close()  # a record left: its slot stays for the next start
    assert await asyncio.to_thread(files) == ["spool-0.lock", "spool-0.sqlite3"]
    drained = Spool(tmp_path, 10_000)
    await drained.open()
    await drained.remove(await drained.peek(10))
    await drained.close()
    assert await asyncio.to_thread(files) == []


async def test_records_in_a_slot_after_a_gap_are_adopted(tmp_path: Path) -> None:
    # Three processes at once, the middle one spooling nothing: slots 0 and 2 are left.
    spools = [Spool(tmp_path, 10_000) for _ in range(3)]
    for spool in spools:
        await spool.open()
    await spools[0].append([RECORD])
    await spools[2].append([RECORD])
    for spool in spools:
        await spool.close()
    assert [s.path.name for s in inspect_spool(tmp_path)] == ["spool-0.sqlite3", "spool-2.sqlite3"]

    adopter = Spool(tmp_path, 10_000)
    await adopter.open()
    try:
        assert adopter.depth == 2  # both, though no slot 1 is there between them
    finally:
        await adopter.close()
