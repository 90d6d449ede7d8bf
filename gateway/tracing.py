"""Optional OpenTelemetry tracing: a span per ingest request with a child span per publish.

Off by default (`[tracing] enabled = false`): the gateway then uses `NO_TRACER`, whose spans cost a
`nullcontext`, and opentelemetry is not even imported (it is an optional extra). Spans carry
counts, names and codes only: never a body, a credential, a signature or a learner's data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final, Protocol

from gateway import __version__
from gateway.errors import ConfigError
from gateway.settings import TracingSettings

if TYPE_CHECKING:  # only for annotations: importing the SDK is the cost tracing opts into
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

AttributeValue = str | int | float | bool

# Span names and attribute keys are what trace queries and dashboards filter on: keep them stable.
REQUEST_SPAN_PREFIX: Final = "POST "  # + the route template, as OpenTelemetry's HTTP conventions
PUBLISH_SPAN: Final = "gateway.publish"


class Span(Protocol):
    """What the gateway does with a span: set attributes, mark it failed."""

    def set(self, key: str, value: AttributeValue) -> None:
        """Set one attribute."""

    def fail(self, code: str) -> None:
        """Mark the span as an error, described by a machine-readable code (never a message)."""


class Tracer(Protocol):
    """Starts spans; `NO_TRACER` when tracing is off."""

    def request_span(
        self, route: str, headers: Mapping[str, str], **attributes: AttributeValue
    ) -> AbstractContextManager[Span]:
        """A server span for one request, continuing the caller's trace (`traceparent`) if any."""

    def span(self, name: str, **attributes: AttributeValue) -> AbstractContextManager[Span]:
        """A span that is the child of the current one."""

    def shutdown(self) -> None:
        """Export what is buffered and stop."""


class _NoSpan:
    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, code: str) -> None:
        pass


class _NoTracer:
    """Tracing off: every span is the same do-nothing object."""

    def __init__(self) -> None:
        self._span = nullcontext(_NoSpan())

    def request_span(
        self, route: str, headers: Mapping[str, str], **attributes: AttributeValue
    ) -> AbstractContextManager[Span]:
        return self._span

    def span(self, name: str, **attributes: AttributeValue) -> AbstractContextManager[Span]:
        return self._span

    def shutdown(self) -> None:
        pass


NO_TRACER: Final[Tracer] = _NoTracer()


def build_tracer(settings: TracingSettings, exporter: SpanExporter | None = None) -> Tracer:
    """The tracer `settings` ask for. `exporter` replaces the OTLP/HTTP exporter (tests pass the
    SDK's InMemorySpanExporter). Raises ConfigError when tracing is on but not installed."""
    if not settings.enabled:
        return NO_TRACER
    try:
        return _OtelTracer(settings, exporter)
    except ImportError as exc:
        raise ConfigError(
            "tracing.enabled is true but OpenTelemetry is not installed: "
            f"pip install 'assessment-gateway[tracing]' ({exc.name} is missing)"
        ) from None


class _OtelSpan:
    def __init__(self, span: Any) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, code: str) -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415  # optional extra

        self._span.set_status(Status(StatusCode.ERROR, code))


class _OtelTracer:
    """Spans through a TracerProvider of the gateway's own (not the global one: each app, and
    each test, gets its own service name and exporter)."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None) -> None:
        # Imported here, not at the top: with tracing off, opentelemetry is never loaded.
        from opentelemetry import trace  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import (  # noqa: PLC0415
            BatchSpanProcessor,
            SimpleSpanProcessor,
        )
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        self.provider: TracerProvider = TracerProvider(resource=resource)
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
                OTLPSpanExporter,
            )

            # Batched, on the SDK's own thread: exporting never runs on the event loop.
            otlp = OTLPSpanExporter(endpoint=settings.endpoint or None)
            self.provider.add_span_processor(BatchSpanProcessor(otlp))
        else:
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        self._tracer = self.provider.get_tracer("gateway", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER

    @contextmanager
    def request_span(
        self, route: str, headers: Mapping[str, str], **attributes: AttributeValue
    ) -> Iterator[Span]:
        parent = self._propagator.extract(headers)
        with self._tracer.start_as_current_span(
            REQUEST_SPAN_PREFIX + route,
            context=parent,
            kind=self._server_kind,
            attributes={"http.request.method": "POST", "http.route": route, **attributes},
            # An exception's message may quote a payload: failures are marked with a code only.
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield _OtelSpan(span)

    @contextmanager
    def span(self, name: str, **attributes: AttributeValue) -> Iterator[Span]:
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            yield _OtelSpan(span)

    def shutdown(self) -> None:
        self.provider.shutdown()
