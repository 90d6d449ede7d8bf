"""Structured logs (structlog, JSON rendered with orjson) and Prometheus metrics.

One log line per request, with request context bound through contextvars. Nothing here logs a
body, a credential, a signature or a URL's query string. Metric names and labels are an interface
(dashboards and alerts use them): every one is documented in docs/operations.md. Label values
are bounded: `tenant` only ever comes from the configuration (or is "unknown").
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from typing import Final

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import Overloaded
from gateway.publisher import Publisher
from gateway.ratelimit import RateLimited
from gateway.settings import LogSettings

_LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


def configure_logging(settings: LogSettings) -> None:
    """Route structlog to stdout as JSON lines (or colourless console lines for humans)."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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


class Metrics:
    """The gateway's Prometheus metrics, in a registry of their own (one per app)."""

    def __init__(self, publisher: Publisher, in_flight: InFlight) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(SpoolCollector(publisher))
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
        in_flight_gauge = Gauge(
            "gateway_in_flight",
            "Ingest requests being worked on now (limit: server.max_in_flight).",
            registry=self.registry,
        )
        in_flight_gauge.set_function(lambda: in_flight.current)

    def observe_publish(self, outcome: str, seconds: float) -> None:
        """Record one publish (`Publisher.on_published`)."""
        self.publish_duration.labels(outcome).observe(seconds)


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


class SpoolCollector(Collector):
    """Spool depth, age of the oldest record and records forwarded, read when scraped."""

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def collect(self) -> Iterator[Metric]:
        publisher = self._publisher
        spool = publisher.spool
        depth = GaugeMetricFamily("gateway_spool_depth", "Records waiting in the local spool.")
        depth.add_metric([], spool.depth if spool else 0)
        yield depth
        age = GaugeMetricFamily(
            "gateway_spool_oldest_age_seconds", "Age of the oldest spooled record (0: empty)."
        )
        oldest = spool.oldest if spool else None
        age.add_metric([], time.time() - oldest if oldest else 0.0)
        yield age
        forwarded = CounterMetricFamily(
            "gateway_spool_forwarded", "Spooled records forwarded to Kafka (rate: drain rate)."
        )
        forwarded.add_metric([], publisher.forwarded_total)
        yield forwarded
        spooled = CounterMetricFamily("gateway_spool_spooled", "Records written to the spool.")
        spooled.add_metric([], publisher.spooled_total)
        yield spooled
        errors = CounterMetricFamily(
            "gateway_broker_errors", "Sends Kafka did not acknowledge in time or refused."
        )
        errors.add_metric([], publisher.broker_errors_total)
        yield errors
        refused = CounterMetricFamily(
            "gateway_records_refused",
            "Records Kafka refused for good (too large, invalid), by what replaced them.",
            labels=["reason", "outcome"],
        )
        for (reason, outcome), count in sorted(publisher.refused.items()):
            refused.add_metric([reason, outcome], count)
        yield refused
