"""Admission: what bounds the requests the gateway works on, before and while their bodies are
read. The pipeline (gateway/pipeline.py) takes each request through it, in this order:

1. the client address's failed-authentication limit (`RateLimiter.check_client`, 429), before
   anything of the request is looked at;
2. for a request only its body can authenticate, a slot of the unverified pool (`Unverified`:
   503 when it is full, 429 when the client's share is), held while its body is read and its
   signature checked;
3. the tenant's rate limit on its vendor's route (`RateLimiter.take`, 429);
4. a slot of the requests in flight (`InFlight`, 503 + `Retry-After`), held until it is answered;

and every body is read within `server.max_body_bytes` (413) and `server.body_timeout_seconds`
(408, `BodyDeadlines`). Deadlines, the bodies' here and the heads' of the HTTP server
(gateway/http_server.py), are checked by one timer per event loop (gateway/deadlines.py).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from gateway.deadlines import Deadlines
from gateway.errors import Overloaded, RateLimited
from gateway.ratelimit import RateLimiter
from gateway.settings import RateLimitSettings, ServerSettings

# What a refused request may retry after, in seconds, when nothing more precise is known (a pool
# or the broker): the `Retry-After` of a retryable error (gateway/boundary.py).
RETRY_AFTER_SECONDS: Final = 5


class Admission:
    """The admission limits of one process, as the settings say (one per app; built on call)."""

    def __init__(self, server: ServerSettings, rate_limit: RateLimitSettings) -> None:
        self.max_body_bytes = server.max_body_bytes
        self.limiter = RateLimiter(rate_limit)
        self.in_flight = InFlight(server.max_in_flight)
        self.unverified = Unverified(
            server.max_unverified_in_flight, server.max_unverified_per_client, RETRY_AFTER_SECONDS
        )
        self.deadlines = BodyDeadlines(server.body_timeout_seconds)


class BodyDeadlines:
    """The body timeout of the requests whose body the app is reading. A request past its
    deadline is cancelled where it waits for body bytes; `stop` then tells the app that the
    cancellation was the timeout's (answered 408), not a shutdown's (which goes on)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._deadlines: Deadlines[asyncio.Task[Any]] = Deadlines(self._expire)
        self._expired: set[asyncio.Task[Any]] = set()

    def start(self) -> asyncio.Task[Any]:
        """Start the clock of the current request (its task)."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover  # requests always run in a task
            raise RuntimeError("a request body is read outside of a task")
        self._deadlines.set(task, self.seconds)
        return task

    def stop(self, task: asyncio.Task[Any]) -> bool:
        """Stop `task`'s clock (again: a no-op): True when it had run out, i.e. the
        CancelledError the task got is the timeout."""
        self._deadlines.clear(task)
        if task not in self._expired:
            return False
        self._expired.discard(task)
        task.uncancel()
        return True

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self._expired.add(task)
        task.cancel()


class InFlight:
    """Bounds the requests a process works on at once (`with in_flight:` raises Overloaded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0

    def __enter__(self) -> None:
        if self.current >= self.limit:
            raise Overloaded(f"the gateway is at its limit of {self.limit} requests in flight")
        self.current += 1

    def __exit__(self, *_: object) -> None:
        self.current -= 1


class Unverified:
    """Bounds the requests whose credential only their body can prove, while it is read and
    checked: `limit` at once in the process (past it, Overloaded: 503) and `per_client` at once
    from one client address (past it, RateLimited: 429). Anyone can send such a request, so they
    get a pool of their own: they cannot take the slots of authenticated requests (`InFlight`),
    nor one address all of theirs."""

    def __init__(self, limit: int, per_client: int, retry_after: int) -> None:
        self.limit = limit
        self.per_client = per_client
        self.retry_after = retry_after
        self.current = 0
        self._clients: dict[str, int] = {}  # at most `limit` addresses

    def take(self, client: str) -> None:
        """Take a slot for `client` (give it back with `release`), or raise."""
        held = self._clients.get(client, 0)
        if held >= self.per_client:
            raise RateLimited(
                f"this address already has {held} requests being authenticated: retry later",
                self.retry_after,
            )
        if self.current >= self.limit:
            raise Overloaded(
                f"the gateway is at its limit of {self.limit} requests being authenticated"
            )
        self._clients[client] = held + 1
        self.current += 1

    def release(self, client: str) -> None:
        """Give back a slot `take` gave `client`."""
        self.current -= 1
        held = self._clients[client] - 1
        if held:
            self._clients[client] = held
        else:
            del self._clients[client]
