"""Delivery: a 2xx only once records are acknowledged by Kafka or durably spooled."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import orjson

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.caliper import assessment_started, envelope, expected_id
from tests.support.gateway import TOKEN, start_gateway, stop_gateway
from tests.support.http import free_port
from tests.support.kafka import TopicReader

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
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            stop_broker(broker)
            started = time.monotonic()
            response = await client.post("/v1/caliper", content=body, headers=AUTH)
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            assert response.json()["title"] == "broker unavailable"
            assert time.monotonic() - started < 10  # bounded by the publish timeout, no hang
            ready = await admin.get("/readyz")
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
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            stop_broker(broker)
            for event in events:
                response = await client.post(
                    "/v1/caliper", content=orjson.dumps(envelope(event)), headers=AUTH
                )
                assert response.status_code == 200  # safe on disk: the sensor never retries
            ready = await admin.get("/readyz")
            assert ready.status_code == 200
            assert ready.json() == {"status": "degraded", "spool_depth": 5}
            metrics = (await admin.get("/metrics")).text
            assert "gateway_spool_depth 5.0" in metrics
            # The last request's line (librdkafka's own lines, logged from its thread while the
            # broker is away, may come after it).
            line = [line for line in gateway.log_lines() if line["event"] == "request"][-1]
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
            while (await admin.get("/readyz")).json()["status"] != "ready":
                assert time.monotonic() < deadline
            assert "gateway_spool_depth 0.0" in (await admin.get("/metrics")).text
    finally:
        stop_gateway(gateway)
        stop_broker(broker)


async def test_a_full_spool_refuses_with_503_and_retry_after(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    small = {"GATEWAY_SPOOL_ACK_DEADLINE_SECONDS": "1", "GATEWAY_SPOOL_MAX_BYTES": "20000"}
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, small)
    try:
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            stop_broker(broker)
            statuses = []
            for _ in range(40):  # ~1.5 KB of records each: the 20 KB spool fills up
                response = await client.post(
                    "/v1/caliper",
                    content=orjson.dumps(envelope(assessment_started())),
                    headers=AUTH,
                )
                statuses.append(response.status_code)
                if response.status_code == 503:
                    break
            assert statuses[0] == 200
            assert statuses[-1] == 503, statuses
            assert response.headers["retry-after"] == "5"
            assert response.json()["title"] == "spool full"
            ready = await admin.get("/readyz")
            assert (ready.status_code, ready.json()["status"]) == (503, "unavailable")
            metrics = (await admin.get("/metrics")).text
            assert "gateway_spool_oldest_age_seconds" in metrics
            assert f"gateway_spool_spooled_total {float(statuses.count(200))}" in metrics
    finally:
        stop_gateway(gateway)
        stop_broker(broker)


async def test_past_max_in_flight_requests_get_503_not_a_queue(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    one_at_a_time = {"GATEWAY_SERVER_MAX_IN_FLIGHT": "1", "GATEWAY_SPOOL_ACK_DEADLINE_SECONDS": "3"}
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, one_at_a_time)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            os.kill(broker.pid, signal.SIGSTOP)  # the first request waits for its acks...
            first = asyncio.create_task(
                client.post(
                    "/v1/caliper",
                    content=orjson.dumps(envelope(assessment_started())),
                    headers=AUTH,
                )
            )
            await asyncio.sleep(0.5)
            second = await client.post(  # ...so the second is refused at once, not queued
                "/v1/caliper", content=orjson.dumps(envelope(assessment_started())), headers=AUTH
            )
            assert second.status_code == 503
            assert second.headers["retry-after"] == "5"
            assert second.json()["title"] == "overloaded"
            assert (await first).status_code == 200  # spooled after the ack deadline
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        stop_gateway(gateway)
        stop_broker(broker)
