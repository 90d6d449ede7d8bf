"""Structured logs (structlog, JSON rendered with orjson) and Prometheus metrics.

One log line per request, with request context bound through contextvars. Nothing here logs a
body, a credential, a signature or a URL's query string. Metric names and labels are an interface
(dashboards and alerts use them): every one is documented in docs/operations.md. Label values
are bounded: `tenant` only ever comes from the configuration (or is "unknown").

With several workers (`gateway serve --workers N`) the metrics are prometheus-client's
multiprocess metrics: each worker writes its values to files in one directory and a scrape,
whichever worker answers it, reads them all (gateway/http_server.py sets the directory up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from gateway.admission import InFlight
from gateway.kafka.publisher import Publisher
from gateway.settings import LogSettings

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
# With several workers, how stale the values of the workers that do not answer a scrape may be.
_REFRESH_SECONDS: Final = 1.0


def configure_logging(settings: LogSettings) -> None:
    """Route structlog to stdout as JSON lines (or colourless console lines for humans)."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _timestamp,
    ]
    if settings.format == "json":
        processors: list[structlog.typing.Processor] = [
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ]
        factory: structlog.typing.WrappedLogger = structlog.BytesLoggerFactory(sys.stdout.buffer)
    else:
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=False)]
        factory = structlog.PrintLoggerFactory(sys.stdout)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _timestamp(_: Any, __: str, event_dict: structlog.typing.EventDict) -> Any:
    """structlog's `TimeStamper(fmt="iso", utc=True)`, the same text, for a third of its cost
    on every log line (the date and time of day are formatted once per second)."""
    event_dict["timestamp"] = iso_now()
    return event_dict


# The latest second and its text up to the seconds, replaced whole (threads log too: a line
# never pairs one second's number with another's text).
_LATEST: list[tuple[int, str]] = [(-1, "")]


def iso_now() -> str:
    """Now in UTC as `datetime.now(UTC).isoformat()` writes it, with `Z` for `+00:00`."""
    return iso_time(time.time_ns() // 1000)


def iso_time(microseconds: int) -> str:
    """An instant (microseconds since the epoch) in UTC as `isoformat()` writes it, with `Z`:
    microseconds when there are some (`2026-12-05T01:02:03.004005Z`, else `...:03Z`)."""
    second, micro = divmod(microseconds, 1_000_000)
    latest = _LATEST[0]
    if latest[0] != second:
        text = datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00")
        latest = _LATEST[0] = (second, text)
    return f"{latest[1]}.{micro:06d}Z" if micro else f"{latest[1]}Z"


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app).

    Requests and publishes are counted where they happen. What the publisher and the request
    slots hold (spool depth and age, records spooled and forwarded, requests in flight) is
    copied into metrics by `refresh`, at every scrape.

    `multiprocess_dir`: prometheus-client's multiprocess directory, with several workers. A
    scrape then adds up every worker's counters and histograms, and the gauges of the live
    workers (the sum of spool depths and of requests in flight, the largest oldest-record age).
    Each worker refreshes its own values every `_REFRESH_SECONDS` (`keep_refreshed`), as the
    worker that answers a scrape can only read the others' from their files."""

    def __init__(
        self, publisher: Publisher, in_flight: InFlight, multiprocess_dir: str | None = None
    ) -> None:
        self._publisher = publisher
        self._in_flight = in_flight
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "HTTP ingest requests by tenant (unknown until authenticated), vendor and status.",
            ["tenant", "vendor", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "gateway_events",
            "Vendor events by outcome (published, deadlettered, duplicate, spooled).",
            ["tenant", "vendor", "outcome"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures",
            "Requests refused 401: missing, unknown or invalid credentials, by vendor.",
            ["vendor"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to answer.",
            ["vendor"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.publish_duration = Histogram(
            "gateway_publish_duration_seconds",
            "From publish call to Kafka's acks (acknowledged) or the spool's sync (spooled).",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Gauges of live workers only ("live" modes): a stopped worker's requests in flight and
        # spool are not there any more (a new worker adopts its spool slot).
        self.in_flight = Gauge(
            "gateway_in_flight",
            "Ingest requests being worked on now (limit: server.max_in_flight).",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "gateway_spool_depth",
            "Records waiting in the local spool.",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.spool_age = Gauge(
            "gateway_spool_oldest_age_seconds",
            "Age of the oldest spooled record (0: empty).",
            multiprocess_mode="livemax",
            registry=self.registry,
        )
        self.forwarded = Counter(
            "gateway_spool_forwarded",
            "Spooled records forwarded to Kafka (rate: drain rate).",
            registry=self.registry,
        )
        self.spooled = Counter(
            "gateway_spool_spooled", "Records written to the spool.", registry=self.registry
        )
        self.broker_errors = Counter(
            "gateway_broker_errors",
            "Sends Kafka did not acknowledge in time or refused.",
            registry=self.registry,
        )
        self.refused = Counter(
            "gateway_records_refused",
            "Records Kafka refused for good (too large, invalid), by what replaced them.",
            ["reason", "outcome"],
            registry=self.registry,
        )
        self._counted: dict[object, float] = {}  # the publisher's totals the counters hold
        # The metrics' children by their labels, as `labels()` returns them (the same object for
        # the same labels; nothing here removes one): a dict lookup instead of its checks.
        self._children: dict[tuple[Any, ...], Any] = {}
        if multiprocess_dir:
            _forget_dead_workers(multiprocess_dir)
            self._exposed = CollectorRegistry()
            MultiProcessCollector(self._exposed, multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            self._exposed = self.registry

    def observe_publish(self, outcome: str, seconds: float) -> None:
        """Record one publish (`Publisher.on_published`)."""
        self.child(self.publish_duration, outcome).observe(seconds)

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once per label set (every request counts)."""
        key = (id(metric), *labels)  # the metrics live as long as this object
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def render(self) -> bytes:
        """A scrape's answer (Prometheus text format), as of the last `refresh`. With several
        workers, all of theirs, read from their files only: safe in a thread meanwhile."""
        return generate_latest(self._exposed)

    def refresh(self) -> None:
        """Copy what the publisher and the request slots hold now into the metrics."""
        publisher = self._publisher
        spool = publisher.spool
        self.in_flight.set(self._in_flight.current)
        self.spool_depth.set(spool.depth if spool else 0)
        oldest = spool.oldest if spool else None
        self.spool_age.set(time.time() - oldest if oldest else 0.0)
        self._count(self.forwarded, publisher.forwarded_total)
        self._count(self.spooled, publisher.spooled_total)
        self._count(self.broker_errors, publisher.broker_errors_total)
        for (reason, outcome), total in publisher.refused.items():
            self._count(self.refused.labels(reason, outcome), total)

    def _count(self, counter: Counter, total: float) -> None:
        """Bring `counter` up to `total`, a publisher's count (it only grows)."""
        added = total - self._counted.get(counter, 0)
        if added > 0:
            counter.inc(added)
            self._counted[counter] = total

    async def keep_refreshed(self) -> None:
        """Refresh every `_REFRESH_SECONDS` until cancelled (with several workers)."""
        while True:
            await asyncio.sleep(_REFRESH_SECONDS)
            self.refresh()

    def close(self) -> None:
        """The worker stops: its last counts are written, and its gauges leave the sums."""
        if self.multiprocess_dir:
            self.refresh()
            mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


def _forget_dead_workers(directory: str) -> None:
    """Remove the gauges of workers that died without `close` (killed, crashed): uvicorn starts
    another in their place, and their last values would stay in the sums for ever."""
    for path in Path(directory).glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        try:
            os.kill(pid, 0)  # signal 0: only whether the process is there
        # PermissionError: the number is another user's process now, so the worker is gone too.
        except (ProcessLookupError, PermissionError):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
