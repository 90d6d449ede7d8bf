"""Structured logs (structlog, JSON rendered with orjson) and Prometheus metrics.

One log line per request, with request context bound through contextvars. Nothing here logs a
body, a credential, a signature or a URL's query string.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_requests",
            "HTTP requests by vendor and status.",
            ["vendor", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "gateway_events",
            "Vendor events by outcome (published, deadlettered, duplicate).",
            ["tenant", "vendor", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time from request to answer.",
            ["vendor"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
