"""Delivery: a 2xx only once records are acknowledged by Kafka or durably spooled."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson

from gateway.broker import start_broker, stop_broker
from tests.integration.conftest import TOKEN, TopicReader, free_port, start_gateway, stop_gateway
from tests.integration.test_caliper import assessment_started, envelope, expected_id

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


async def test_without_spool_an_unacknowledged_request_gets_503_and_its_retry_is_published(
    tmp_path: Path,
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(
        bootstrap,
        tmp_path,
        {"GATEWAY_KAFKA_PUBLISH_TIMEOUT_SECONDS": "2", "GATEWAY_SPOOL_ENABLED": "false"},
    )
    event = assessment_started()
    body = orjson.dumps(envelope(event))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            stop_broker(broker)
            started = time.monotonic()
            response = await client.post("/v1/caliper", content=body, headers=AUTH)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.json()["title"] == "broker unavailable"
            assert time.monotonic() - started < 10  # bounded by the publish timeout, no hang
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {"status": "unavailable"}

            # The broker comes back (empty: it is in memory); the sender's retry is published,
            # because the failed attempt did not mark the event as seen.
            broker = start_broker(port, quiet=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                response = await client.post("/v1/caliper", content=body, headers=AUTH)
                if response.status_code == 200:
                    break
            assert response.status_code == 200
        records = await TopicReader(bootstrap).read(
            gateway.canonical_topic,
            lambda rs: expected_id(event) in [r.json()["id"] for r in rs],
        )
        assert expected_id(event) in [r.json()["id"] for r in records]
    finally:
        stop_gateway(gateway)
        stop_broker(broker)


async def test_with_the_broker_down_events_are_spooled_then_forwarded(tmp_path: Path) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(bootstrap, tmp_path, {"GATEWAY_SPOOL_ACK_DEADLINE_SECONDS": "1"})
    events = [assessment_started() for _ in range(5)]
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            stop_broker(broker)
            for event in events:
                response = await client.post(
                    "/v1/caliper", content=orjson.dumps(envelope(event)), headers=AUTH
                )
                assert response.status_code == 200  # safe on disk: the sensor never retries
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "degraded", "spool_depth": 5}
            metrics = (await client.get("/metrics")).text
            assert "gateway_spool_depth 5.0" in metrics
            line = gateway.log_lines()[-1]
            assert line["spooled"] == 1

            broker = start_broker(port, quiet=True)
            expected = {expected_id(e) for e in events}
            records = await TopicReader(bootstrap).read(
                gateway.canonical_topic,
                lambda rs: expected <= {r.json()["id"] for r in rs},
                within=30,
            )
            assert expected <= {r.json()["id"] for r in records}
            deadline = time.monotonic() + 10
            while (await client.get("/readyz")).json()["status"] != "ready":
                assert time.monotonic() < deadline
            assert "gateway_spool_depth 0.0" in (await client.get("/metrics")).text
    finally:
        stop_gateway(gateway)
        stop_broker(broker)
