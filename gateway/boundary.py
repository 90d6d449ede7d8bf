"""The error boundary: where every request's answer is settled, whatever route it took.

An error the gateway answers with (a `GatewayError`, gateway/errors.py) becomes the reply of the
vendor whose route it is, in the vendor's own format (`Vendor.render_error`), or problem+json
where no vendor's route was found (the router's 404 and 405); an unexpected exception becomes
the `internal_error` answer, logged with its traceback. The headers an answer needs are added
here: `Retry-After` (a rate limit's wait, or `RETRY_AFTER_SECONDS` for what may pass), `Allow`
(405) and `connection: close` for a request refused before it was taken (the rest of its body
is never read). Every request then gets its one `request` log line here, and a vendor route's
request its metrics; a refused credential its `auth_failed` line and counter (never the secret).

The pipeline (gateway/pipeline.py) calls it for the vendors' routes and their extra routes,
the app (gateway/app.py) for the router's 404 and 405: one place, one format, one line.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import structlog

from gateway.admission import RETRY_AFTER_SECONDS
from gateway.errors import GatewayError, MethodNotAllowed, RateLimited
from gateway.vendors.base import Reply, Vendor, problem_reply

if TYPE_CHECKING:  # the metrics (and prometheus-client) are the app's: only their type here
    from gateway.observability import Metrics
    from gateway.pipeline import Tally

_RETRY_AFTER: Final = str(RETRY_AFTER_SECONDS)

log = structlog.get_logger("gateway")


class Boundary:
    """Turns errors into replies and writes what every request leaves behind: its log line,
    and its metrics when it is an ingest request of a vendor's route (`metrics`: the app's;
    None where nothing is served, e.g. `gateway replay`)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

    def reply(self, vendor: Vendor | None, error: GatewayError, *, taken: bool = True) -> Reply:
        """The answer to `error`: in `vendor`'s format (problem+json without one), with the
        headers it calls for. `taken=False`: the request was refused before it was taken, maybe
        before its body was read; the connection is not kept."""
        reply = vendor.render_error(error) if vendor is not None else problem_reply(error)
        headers: dict[str, str] | None = None
        if isinstance(error, RateLimited):
            headers = {**reply.headers, "retry-after": str(error.retry_after)}
        elif error.retryable:
            headers = {**reply.headers, "retry-after": _RETRY_AFTER}
        elif isinstance(error, MethodNotAllowed):
            headers = {**reply.headers, "allow": error.allow}
        if not taken:
            headers = {**reply.headers} if headers is None else headers
            headers["connection"] = "close"
        if headers is None:
            return reply
        return Reply(reply.status, reply.body, reply.media_type, headers)

    def failed(self, vendor: Vendor | None, request_id: str) -> GatewayError:
        """Called while an unexpected exception is handled (a bug): logs it with its traceback
        and returns the error it is answered with, never a bare 500."""
        name = vendor.name if vendor is not None else None
        log.exception("request_failed", request_id=request_id, vendor=name)
        return GatewayError("the gateway failed to take this request")

    def refused_credential(
        self, vendor: Vendor, request_id: str, error: GatewayError, client: str
    ) -> None:
        """A failed authentication: counted, and logged with the gateway's own words (`reason`
        never quotes what the sender presented)."""
        if self.metrics is not None:
            self.metrics.auth_failures.labels(vendor.name).inc()
        log.warning(
            "auth_failed",
            request_id=request_id,
            vendor=vendor.name,
            reason=error.message,
            client=client,
        )

    def ingested(
        self,
        vendor: Vendor,
        *,
        request_id: str,
        method: str,
        tenant: str | None,
        status: int,
        error: str | None,
        tally: Tally,
        started: float,
        route: str | None = None,
    ) -> None:
        """The log line and metrics of a request to a vendor's route (`route`: an extra route
        of the vendor that takes events, when not its ingest route)."""
        elapsed = time.perf_counter() - started
        metrics = self.metrics
        if metrics is not None:
            label = tenant or "unknown"
            child = metrics.child
            child(metrics.requests, label, vendor.name, str(status)).inc()
            child(metrics.latency, vendor.name).observe(elapsed)
            for outcome, count in (
                ("published", tally.published),
                ("deadlettered", tally.deadlettered),
                ("duplicate", tally.duplicates),
                ("spooled", tally.spooled),
            ):
                if count:
                    child(metrics.events, label, vendor.name, outcome).inc(count)
        log.info(
            "request",
            request_id=request_id,
            method=method,
            route=route or vendor.path,
            vendor=vendor.name,
            tenant=tenant,
            status=status,
            error=error,
            accepted=tally.published,
            deadlettered=tally.deadlettered,
            duplicates=tally.duplicates,
            spooled=tally.spooled,
            latency_ms=round(elapsed * 1000, 3),
        )

    def answered(
        self,
        *,
        request_id: str,
        method: str,
        route: str | None,
        vendor: str | None,
        tenant: str | None,
        status: int,
        error: str | None,
        started: float,
    ) -> None:
        """The log line of any other request: a vendor's extra route (a read model, its
        configuration), or one the router found no route for (`route` None: 404; the route's
        path: 405). Its fields are those it knows."""
        log.info(
            "request",
            request_id=request_id,
            method=method,
            route=route,
            vendor=vendor,
            tenant=tenant,
            status=status,
            error=error,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
