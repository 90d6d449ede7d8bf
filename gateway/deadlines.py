"""Deadlines of many things at once, checked by one timer per event loop.

Arming and cancelling a timer of the event loop costs about 1.5-3 us on uvloop, which every
request would pay once per deadline it has: the head's and the body's (gateway/http_server.py,
gateway/admission.py) and the acks' of its records (gateway/kafka/publisher.py). Here a deadline
is a dict entry, and one timer sweeps them a few times per timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Final, Generic, TypeVar

K = TypeVar("K", bound=Hashable)

# The longest a passed deadline waits to be noticed, whatever the timeouts.
_MAX_SWEEP_SECONDS: Final = 1.0


class Deadlines(Generic[K]):
    """When each of many things must be done, checked by one timer per event loop: `expire(key)`
    is called once a key's deadline has passed, at most a quarter of its timeout (and at most a
    second) late. Setting and clearing a deadline costs a dict entry; the timer runs only while
    some deadline is pending."""

    def __init__(self, expire: Callable[[K], None]) -> None:
        self._expire = expire
        self._due: dict[K, float] = {}
        self._interval = _MAX_SWEEP_SECONDS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._due)

    def set(self, key: K, seconds: float) -> None:
        """`key` must be done within `seconds` from now (replaces an earlier deadline)."""
        loop = asyncio.get_running_loop()
        self._due[key] = loop.time() + seconds
        if seconds < self._interval * 4:
            self._interval = seconds / 4
        # A loop of its own: the app's deadlines outlive the loop of a test client.
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(self._interval, self._sweep)

    def clear(self, key: K) -> None:
        """`key` is done: nothing happens at its deadline."""
        self._due.pop(key, None)

    def _sweep(self) -> None:
        loop = self._loop
        if loop is None:  # pragma: no cover  # set() names the loop before arming the timer
            return
        now = loop.time()
        try:
            for key in [key for key, due in self._due.items() if due <= now]:
                # Removed first: `expire` may give the key a new deadline (a refused connection
                # lingers); an exception leaves the keys after it for the next sweep.
                del self._due[key]
                self._expire(key)
        finally:
            self._timer = loop.call_later(self._interval, self._sweep) if self._due else None
