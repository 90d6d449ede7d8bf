"""Rate limits: a token bucket per (tenant, vendor), and one per client IP for failed
authentication.

A tenant's sender may send `rate_per_second` requests per second on average and `burst` at once;
past that it gets 429 with `Retry-After` (the seconds until its bucket holds a token again), in its
vendor's error format. Unauthenticated requests cannot be counted against a tenant, so each failed
authentication takes a token from its client IP's bucket; an IP whose bucket is empty gets 429 for
every request until it refills, before any signature is computed. The IP is the TCP peer's:
`X-Forwarded-For` is not trusted (behind a proxy every sender shares the proxy's bucket, so keep
that limit generous there, or limit at the proxy). Buckets live in the process: with several
workers or replicas each has its own.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from gateway.errors import RateLimited
from gateway.settings import RateLimitSettings


class TokenBuckets:
    """Token buckets by key: `rate` tokens per second, up to `burst`, at most `max_keys` kept.

    A key forgotten (least recently used first) starts again full: forgetting only ever lets a
    sender through, never refuses one.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def _level(self, key: Hashable) -> tuple[float, float]:
        now = self._clock()
        tokens, then = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - then) * self._rate), now

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` has a whole token (0: it has one now). Takes nothing."""
        tokens, _ = self._level(key)
        return 0.0 if tokens >= 1 else (1 - tokens) / self._rate

    def take(self, key: Hashable) -> float:
        """Take a token for `key`: 0 when it had one, else the seconds until it will."""
        tokens, now = self._level(key)
        if tokens < 1:
            return (1 - tokens) / self._rate
        self._store(key, tokens - 1, now)
        return 0.0

    def _store(self, key: Hashable, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)


class RateLimiter:
    """The gateway's limits; every method is a no-op when `rate_limit.enabled` is false."""

    def __init__(
        self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.enabled = settings.enabled
        self._senders = TokenBuckets(
            settings.rate_per_second, settings.burst, settings.max_buckets, clock
        )
        self._failures = TokenBuckets(
            settings.failed_auth_rate_per_second,
            settings.failed_auth_burst,
            settings.max_buckets,
            clock,
        )

    def check_client(self, client: str) -> None:
        """Raise RateLimited when `client` has used up its failed authentications."""
        if self.enabled:
            wait = self._failures.wait(client)
            if wait:
                raise RateLimited("too many failed authentications from this address", _ceil(wait))

    def failed(self, client: str) -> None:
        """Count a failed authentication of `client`."""
        if self.enabled:
            self._failures.take(client)

    def take(self, tenant: str, vendor: str) -> None:
        """Take a token for the tenant's vendor, or raise RateLimited."""
        if self.enabled:
            wait = self._senders.take((tenant, vendor))
            if wait:
                raise RateLimited("over the rate limit: retry later", _ceil(wait))


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))
