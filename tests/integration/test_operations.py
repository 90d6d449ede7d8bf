"""What ops see: health and readiness probes, Prometheus metrics (both on the admin port), one JSON
log line per request."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import TOKEN, Gateway, start_gateway, stop_gateway
from tests.support.http import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def test_health_and_readiness(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/healthz")).json() == {"status": "ok"}
    ready = await admin.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "spool_depth": 0}


async def test_metrics_count_requests_and_events(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    bad = assessment_started()
    del bad["actor"]
    await client.post(
        "/v1/caliper", content=orjson.dumps(envelope(assessment_started(), bad)), headers=AUTH
    )
    await client.post("/v1/caliper", content=b"{}", headers={"Authorization": "nope"})
    text = (await admin.get("/metrics")).text
    assert 'gateway_requests_total{status="200",tenant="demo",vendor="caliper"}' in text
    assert 'gateway_requests_total{status="401",tenant="unknown",vendor="caliper"}' in text
    assert 'gateway_events_total{outcome="published",tenant="demo",vendor="caliper"}' in text
    assert 'gateway_events_total{outcome="deadlettered",tenant="demo",vendor="caliper"}' in text
    assert "gateway_request_duration_seconds_bucket" in text


async def test_one_log_line_per_request_without_secrets_or_bodies(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    request_id = uuid.uuid4().hex
    event = assessment_started()
    event["actor"]["email"] = "jane.learner@example.edu"
    response = await client.post(
        "/v1/caliper",
        content=orjson.dumps(envelope(event, event)),
        headers={**AUTH, "X-Request-Id": request_id},
    )
    assert response.headers["x-request-id"] == request_id
    lines = [line for line in gateway.log_lines() if line.get("request_id") == request_id]
    assert len(lines) == 1
    line = lines[0]
    assert line["event"] == "request"
    assert line["tenant"] == "demo"
    assert line["vendor"] == "caliper"
    assert line["status"] == 200
    assert (line["accepted"], line["deadlettered"], line["duplicates"]) == (1, 0, 1)
    assert isinstance(line["latency_ms"], float)
    log = gateway.log_path.read_text()
    assert TOKEN not in log
    assert "jane.learner@example.edu" not in log
    assert event["id"] not in log  # no payload content at all


async def test_readiness_reports_degraded_mode_when_the_broker_is_gone(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path)
    try:
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            assert (await admin.get("/readyz")).json()["status"] == "ready"
            stop_broker(broker)
            # Kafka is gone but the spool takes events: still ready for traffic, and says so.
            ready = await admin.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["status"] == "degraded"
            assert (await admin.get("/healthz")).status_code == 200
            await client.post(
                "/v1/caliper",
                content=orjson.dumps(envelope(assessment_started())),
                headers=AUTH,
            )
            assert "gateway_broker_errors_total 1.0" in (await admin.get("/metrics")).text
    finally:
        stop_gateway(gateway)
        stop_broker(broker)


@pytest.mark.parametrize("path", ["/openapi.json"])
async def test_openapi_lists_every_route(admin: httpx.AsyncClient, path: str) -> None:
    document = (await admin.get(path)).json()
    # The routes senders call; the operational ones are on another port than those.
    assert "/v1/caliper" in document["paths"]
    assert not {"/healthz", "/readyz", "/metrics", "/openapi.json"} & set(document["paths"])
    paths = document["paths"]
    assert set(paths["/v1/caliper"]) == {"post", "get"}
    events = "/api/v1/courses/{course_id}/quizzes/{quiz_id}/submissions/{id}/events"
    assert set(paths[events]) == {"post", "get"}
    assert [p["name"] for p in paths[events]["post"]["parameters"]] == [
        "course_id",
        "quiz_id",
        "id",
    ]
    assert "/api/v1/courses/{course_id}" in paths
    pearson = paths["/v1/pearson/eventing"]["post"]["requestBody"]["content"]
    assert list(pearson) == ["application/x-www-form-urlencoded"]
    assert "/v1/inspera/webhooks" in paths
