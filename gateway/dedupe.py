"""Remembers which canonical records were published, so that a re-sent event makes no second one.

Keys are canonical record ids, which already encode tenant, vendor, the vendor's event identity and
the event's content: a re-send has the same key, an id reused with other content does not.
Memory is bounded (`max_entries`, oldest forgotten first) and so is time (`window_seconds`): about
110 bytes an entry (record ids kept as their 16 bytes, one shared expiry per second, insertion
order in a deque), so the default 1,000,000 entries hold at most about 110 MB.
The memory is per process: a re-send that reaches another worker, or arrives after a restart,
is published again with the same deterministic id, which consumers can deduplicate on.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

Key = str | bytes


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
        self._published: dict[Key, float] = {}  # key -> expiry
        self._order: deque[Key] = deque()  # keys as remembered, oldest first
        self._expiry = (-1, 0.0)  # (second, its expiry): one float shared by a second's keys
        # Keys being published, each with the future its waiters wait on: made only when a
        # second request claims the key (most never have one: a future per key is wasted work).
        self._pending: dict[str, asyncio.Future[bool] | None] = {}

    def __len__(self) -> int:
        return len(self._published)

    async def claim(self, key: str) -> bool:
        """True if the caller must publish `key`; False if it was published within the window."""
        while True:
            taken = self.claim_now(key)
            if taken is not None:
                return taken
            pending = self._pending[key]
            if pending is None:
                pending = self._pending[key] = asyncio.get_running_loop().create_future()
            if await asyncio.shield(pending):
                return False

    def claim_now(self, key: str) -> bool | None:
        """`claim` when it need not wait: True or False as `claim` says; None while another
        request publishes `key` (then `claim` waits for its outcome)."""
        if self._is_published(_compact(key)):
            return False
        if key in self._pending:
            return None
        self._pending[key] = None
        return True

    def settle(self, key: str, published: bool) -> None:
        """Record the outcome of a claim; wakes any request waiting on the same key."""
        future = self._pending.pop(key, None)
        if published:
            self._remember(_compact(key))
        if future is not None and not future.done():
            future.set_result(published)

    def _is_published(self, key: Key) -> bool:
        expiry = self._published.get(key)
        if expiry is None:
            return False
        if expiry > self._clock():
            return True
        del self._published[key]
        return False

    def _remember(self, key: Key) -> None:
        now = self._clock()
        second = math.ceil(now)
        if self._expiry[0] != second:
            self._expiry = (second, second + self._window)
        self._published[key] = self._expiry[1]
        self._order.append(key)
        self._expire(now)

    def _expire(self, now: float) -> None:
        published, order = self._published, self._order
        while order:
            oldest = order[0]
            expiry = published.get(oldest)
            if expiry is not None and len(published) <= self._max and expiry > now:
                break
            order.popleft()
            # A key forgotten when it expired and remembered again sits in `order` twice: its
            # older place is dropped here without forgetting it, unless memory is over its
            # bound (then it is forgotten early: a later re-send is one duplicate, never a loss).
            if expiry is not None and (expiry <= now or len(published) > self._max):
                del published[oldest]


def _compact(key: str) -> Key:
    """A record id (a UUID) as its 16 bytes: 49 bytes of memory instead of 85 for its text."""
    if len(key) == 36:
        try:
            return bytes.fromhex(key.replace("-", ""))
        except ValueError:
            pass
    return key
