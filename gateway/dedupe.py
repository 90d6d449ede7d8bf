"""Remembers which canonical records were published, so that a re-sent event makes no second one.

Keys are canonical record ids, which already encode tenant, vendor, the vendor's event identity and
the event's content: a re-send has the same key, an id reused with other content does not.
Memory is bounded (`max_entries`, oldest forgotten first) and so is time (`window_seconds`).
The memory is per process: a re-send that reaches another worker, or arrives after a restart,
is published again with the same deterministic id, which consumers can deduplicate on.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable


class Deduper:
    """Claims keys before publishing and settles them after the broker's answer.

    A key being published by one request makes a concurrent request with the same key wait for
    the outcome: a duplicate if it was published, its own claim if publishing failed. So two
    concurrent re-sends never both publish, and a failed publish never hides the event.
    """

    def __init__(
        self,
        window_seconds: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._clock = clock
        self._published: OrderedDict[str, float] = OrderedDict()  # key -> expiry, oldest first
        self._pending: dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._published)

    async def claim(self, key: str) -> bool:
        """True if the caller must publish `key`; False if it was published within the window."""
        while True:
            if self._is_published(key):
                return False
            pending = self._pending.get(key)
            if pending is None:
                self._pending[key] = asyncio.get_running_loop().create_future()
                return True
            if await asyncio.shield(pending):
                return False

    def settle(self, key: str, published: bool) -> None:
        """Record the outcome of a claim; wakes any request waiting on the same key."""
        future = self._pending.pop(key, None)
        if published:
            self._remember(key)
        if future is not None and not future.done():
            future.set_result(published)

    def _is_published(self, key: str) -> bool:
        expiry = self._published.get(key)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del self._published[key]
        return False

    def _remember(self, key: str) -> None:
        self._published[key] = self._clock() + self._window
        self._published.move_to_end(key)
        self._expire()

    def _expire(self) -> None:
        now = self._clock()
        published = self._published
        while published:
            oldest_key = next(iter(published))
            if len(published) <= self._max and published[oldest_key] > now:
                break
            del published[oldest_key]
