"""The keys Canvas Live Events are signed with: Instructure's JWKS, fetched and kept fresh.

A component of the Canvas package (see `Component`): fetched once at start-up (a JWKS that
cannot be reached then is a degraded state, logged, not a crash: signed events get 503 with
Retry-After until a fetch succeeds, and Canvas redelivers them), again every
`canvas.live_events_jwks_refresh_seconds`, and when a token names a `kid` not known yet, at most
once per `canvas.live_events_jwks_min_refetch_seconds` whatever the number of such tokens. Every
fetch is asynchronous (never on the event loop's thread), bounded in time and size, and one at
a time: callers that need one while it runs wait for that one.

Only RSA keys that may sign (`use` absent or `sig`, `alg` absent or RS256) are kept: the
verifier accepts RS256 alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import httpx
import jwt
import orjson
import structlog

from gateway.vendors.base import ExtraRoute, Item
from gateway.vendors.canvas.settings import CanvasSettings

log = structlog.get_logger("gateway.canvas.live_events")

RS256: Final = "RS256"


class JwksError(Exception):
    """A fetch of the JWKS failed (unreachable, too slow, too large, not a JWKS)."""


def parse_jwks(body: bytes) -> dict[str, Any]:
    """The signing keys of a JWKS document by `kid`: RSA keys usable for RS256 only."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise JwksError("the JWKS is not JSON") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise JwksError("the JWKS has no `keys` array")
    found: dict[str, Any] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", RS256) != RS256:
            continue
        try:
            found[kid] = jwt.PyJWK(entry, algorithm=RS256).key
        except jwt.PyJWTError:
            continue  # a malformed key is skipped; the others still work
    return found


class LiveEventKeys:
    """Instructure's published keys by `kid`, fetched in the background (see the module)."""

    vendor = "canvas"

    def __init__(
        self, settings: CanvasSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self.loaded = False  # a fetch has succeeded at least once
        self.fetches = 0  # fetches attempted (metrics, tests of the bound)
        self._last_attempt: float | None = None
        self._running: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None

    @property
    def kids(self) -> tuple[str, ...]:
        """The `kid`s known now."""
        return tuple(self._keys)

    def get(self, kid: str) -> Any:
        """The public key named `kid`, None when unknown."""
        return self._keys.get(kid)

    async def key_for(self, kid: str) -> Any:
        """The key named `kid`, refetching the JWKS first when it is unknown and the last
        fetch is older than the refetch bound (otherwise the keys as they are)."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        last = self._last_attempt
        bound = self._settings.live_events_jwks_min_refetch_seconds
        if self._running is not None or last is None or self._clock() - last >= bound:
            await self.refresh()
        return self._keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the JWKS now (or wait for the fetch under way); failures are logged."""
        if self._running is None:
            self._last_attempt = self._clock()
            self._running = asyncio.ensure_future(self._fetch_and_keep())
            self._running.add_done_callback(self._fetched)
        await asyncio.shield(self._running)

    def _fetched(self, task: asyncio.Task[None]) -> None:
        self._running = None

    async def _fetch_and_keep(self) -> None:
        self.fetches += 1
        url = self._settings.live_events_jwks_url
        try:
            keys = parse_jwks(await self._fetch(url))
        except (JwksError, httpx.HTTPError) as error:
            # The URL is a published address, not a secret.
            log.warning(
                "live_events_jwks_unavailable",
                url=url,
                error=str(error) or type(error).__name__,
                degraded=not self.loaded,
            )
            return
        self._keys = keys
        self.loaded = True
        log.info("live_events_jwks_fetched", url=url, kids=sorted(keys))

    async def _fetch(self, url: str) -> bytes:
        limit = self._settings.live_events_jwks_max_bytes
        seconds = self._settings.live_events_jwks_timeout_seconds
        try:
            async with asyncio.timeout(seconds):
                async with (
                    httpx.AsyncClient(timeout=seconds, follow_redirects=False) as client,
                    client.stream("GET", url, headers={"accept": "application/json"}) as answer,
                ):
                    if answer.status_code != 200:
                        raise JwksError(f"the JWKS URL answered {answer.status_code}")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in answer.aiter_bytes():
                        size += len(chunk)
                        if size > limit:
                            raise JwksError(f"the JWKS is larger than {limit} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
        except TimeoutError:
            raise JwksError(f"the JWKS did not arrive within {seconds:g}s") from None

    # --- the component ---------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the keys once (a failure is a degraded state, logged), then keep them fresh."""
        await self.refresh()
        self._periodic = asyncio.create_task(self._keep_fresh())

    async def _keep_fresh(self) -> None:
        while True:
            # Until a first fetch succeeds, retried at the refetch bound rather than hourly.
            wait = (
                self._settings.live_events_jwks_refresh_seconds
                if self.loaded
                else self._settings.live_events_jwks_min_refetch_seconds
            )
            await asyncio.sleep(wait)
            await self.refresh()

    async def stop(self) -> None:
        """Stop the periodic refresh and any fetch under way."""
        for task in (self._periodic, self._running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._periodic = None

    def routes(self) -> Sequence[ExtraRoute]:
        """None: the keys serve the verifier only."""
        return ()

    async def accepted(self, tenant: str, items: Sequence[Item], request_id: str) -> None:
        """Nothing to do after a request."""


def jwks_document(keys: Mapping[str, Any]) -> dict[str, Any]:
    """A JWKS publishing `keys` (kid -> RSA public key), as Instructure's is shaped."""
    published = []
    for kid, key in keys.items():
        entry = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
        published.append({**entry, "kid": kid, "alg": RS256, "use": "sig"})
    return {"keys": published}
