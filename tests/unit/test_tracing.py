"""Tracing as an operator turns it on: the real gateway app (create_app, its lifespan, the
embedded broker) with the real OpenTelemetry SDK, spans caught by the SDK's InMemorySpanExporter.
With tracing off, opentelemetry is never imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.app import create_app
from gateway.errors import ConfigError
from gateway.kafka.broker import start_broker, stop_broker
from gateway.settings import Settings, TracingSettings, load_settings
from gateway.tracing import NO_TRACER, build_tracer
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN
from tests.support.http import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """An embedded broker of this module's own (the integration fixtures live elsewhere)."""
    port = free_port()
    process = start_broker(port, quiet=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(process)


def environment(broker: str, tmp_path: Path, tracing: bool = True) -> dict[str, str]:
    """The dev configuration against `broker`, with topics and state of the test's own."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": f"edu.events.v1.{suffix}",
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"edu.events.deadletter.v1.{suffix}",
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path / "state"),
        "GATEWAY_TRACING_ENABLED": "true" if tracing else "false",
        "GATEWAY_TRACING_SERVICE_NAME": "gateway-under-test",
    }


def settings_for(broker: str, tmp_path: Path) -> Settings:
    return load_settings(environ=environment(broker, tmp_path))


@asynccontextmanager
async def traced_gateway(
    broker: str, tmp_path: Path, exporter: InMemorySpanExporter
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with tracing on, its lifespan running (producer connected), over ASGI."""
    app = create_app(settings_for(broker, tmp_path), span_exporter=exporter)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def attributes(span: ReadableSpan) -> Mapping[str, object]:
    return dict(span.attributes or {})


async def test_a_request_span_with_its_publish_span_as_child(broker: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    good, bad = assessment_started(), assessment_started()
    bad["actor"]["email"] = "jane.learner@example.edu"
    del bad["object"]
    async with traced_gateway(broker, tmp_path, exporter) as client:
        response = await client.post(
            "/v1/caliper",
            content=orjson.dumps(envelope(good, bad)),
            headers={**AUTH, "X-Request-Id": "trace-me-1"},
        )
        assert response.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v1/caliper", "gateway.publish"}
    request, publish = spans["POST /v1/caliper"], spans["gateway.publish"]

    assert request.kind is SpanKind.SERVER
    assert request.parent is None
    assert publish.parent is not None
    assert publish.parent.span_id == request.context.span_id
    assert publish.context.trace_id == request.context.trace_id
    assert attributes(request) == {
        "http.request.method": "POST",
        "http.route": "/v1/caliper",
        "http.response.status_code": 200,
        "gateway.vendor": "caliper",
        "gateway.tenant": "demo",
        "gateway.request_id": "trace-me-1",
        "gateway.events.accepted": 1,
        "gateway.events.deadlettered": 1,
        "gateway.events.duplicates": 0,
        "gateway.events.spooled": 0,
    }
    assert request.status.status_code is StatusCode.UNSET
    assert attributes(publish) == {
        "messaging.system": "kafka",
        "gateway.records": 2,
        "gateway.outcome": "acknowledged",
    }
    assert request.resource.attributes["service.name"] == "gateway-under-test"
    # Nothing of the request's content or credentials travels with the spans.
    exported = repr([(s.attributes, s.events, s.status.description) for s in spans.values()])
    for secret in (TOKEN, "jane.learner@example.edu", good["id"], bad["id"], "554433"):
        assert secret not in exported


async def test_a_refused_request_has_a_span_without_tenant_or_publish(
    broker: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    async with traced_gateway(broker, tmp_path, exporter) as client:
        response = await client.post(
            "/v1/caliper",
            content=orjson.dumps(envelope(assessment_started())),
            headers={**AUTH, "Authorization": "Bearer wrong-token"},
        )
        assert response.status_code == 401
    (request,) = exporter.get_finished_spans()
    assert request.name == "POST /v1/caliper"
    assert request.attributes is not None
    assert "gateway.tenant" not in request.attributes
    assert request.attributes["http.response.status_code"] == 401
    assert request.attributes["error.type"] == "unauthorized"
    assert request.attributes["gateway.events.accepted"] == 0
    # A client error is not the server's failure (OpenTelemetry's HTTP server conventions).
    assert request.status.status_code is StatusCode.UNSET
    assert "wrong-token" not in repr(request.attributes)


async def test_the_request_span_continues_the_callers_trace(broker: str, tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with traced_gateway(broker, tmp_path, exporter) as client:
        response = await client.post(
            "/v1/caliper",
            content=orjson.dumps(envelope(assessment_started())),
            headers={**AUTH, "traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
        assert response.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    request = spans["POST /v1/caliper"]
    assert request.context.trace_id == int(trace_id, 16)
    assert request.parent is not None
    assert request.parent.span_id == int(parent_id, 16)
    assert spans["gateway.publish"].context.trace_id == int(trace_id, 16)


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver that keeps what it is sent (path, content type, body)."""

    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Collector", (_Collector,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", received
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_reach_the_configured_otlp_endpoint(
    broker: str, tmp_path: Path, collector: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    endpoint, received = collector
    settings = load_settings(
        environ={**environment(broker, tmp_path), "GATEWAY_TRACING_ENDPOINT": endpoint}
    )
    app = create_app(settings)  # the real OTLP/HTTP exporter, batched
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            body = orjson.dumps(envelope(assessment_started()))
            assert (await client.post("/v1/caliper", content=body, headers=AUTH)).status_code == 200
    # Shutdown flushed the batch.
    assert received, "nothing was exported"
    assert {(path, media) for path, media, _ in received} == {
        ("/v1/traces", "application/x-protobuf")
    }
    names, services = [], set()
    for _, _, payload in received:
        request = ExportTraceServiceRequest.FromString(payload)
        for resource_spans in request.resource_spans:
            services |= {
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            }
            names += [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert services == {"gateway-under-test"}
    assert sorted(names) == ["POST /v1/caliper", "gateway.publish"]


# Run in a fresh interpreter (this test process has imported opentelemetry already), configured
# from the environment as `gateway serve` is.
_UNTRACED_REQUEST = """
import asyncio, sys, httpx, orjson
from gateway.app import create_app
from tests.support.caliper import assessment_started, envelope

AUTH = {"Authorization": "Bearer dev-token", "Content-Type": "application/json"}

async def main() -> None:
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            body = orjson.dumps(envelope(assessment_started()))
            response = await client.post("/v1/caliper", content=body, headers=AUTH)
            print("status", response.status_code)
    print("loaded", sorted(m for m in sys.modules if m.startswith("opentelemetry")))

asyncio.run(main())
"""


def test_with_tracing_off_opentelemetry_is_never_imported(broker: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _UNTRACED_REQUEST],
        env={**os.environ, **environment(broker, tmp_path, tracing=False)},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    assert "status 200" in result.stdout, result.stdout + result.stderr
    assert "loaded []" in result.stdout, result.stdout


def test_tracing_off_is_the_do_nothing_tracer() -> None:
    assert build_tracer(TracingSettings()) is NO_TRACER


def test_tracing_on_without_the_extra_fails_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an installation without `[tracing]` looks like to an import.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.resources", None)
    with pytest.raises(ConfigError, match=r"tracing\.enabled.*assessment-gateway\[tracing\]"):
        build_tracer(TracingSettings(enabled=True))
