"""Inspera test-events exports end to end: a webhook names a pre-signed URL on a real loopback
HTTP server, the gateway answers at once, downloads the file in the background and the
candidates' events arrive in the real broker. And the pull side: `gateway inspera export`
against a fake Inspera API on loopback.

Every pre-signed URL here carries a unique secret in its signature: it must appear neither in
Kafka (canonical records, dead letters) nor in the gateway's or the command's output.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.gateway import (
    ROOT,
    Gateway,
    running_gateway,
    start_gateway,
    stop_gateway,
    wait_for_log,
)
from tests.support.http import FileServer, free_port
from tests.support.inspera import (
    API_KEY,
    EXPORT,
    FIXTURE_SECRET,
    FakeInspera,
    export_finished,
    export_log,
    fresh_test_id,
    of_test,
    post,
    signed_url,
)
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

EXPORT_EVENTS = 5  # in the fixture: 3 + 2 events; 2 of them flagged
CANONICAL = SCHEMAS.get("canonical/event.schema.json")


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


async def export_records(
    kafka: TopicReader, topic: str, test_id: Any, count: int = EXPORT_EVENTS + 1
) -> list[dict[str, Any]]:
    """The records of test `test_id`: its export's events and its webhook's generic record."""
    records = await kafka.read(topic, lambda rs: len(of_test(rs, test_id)) >= count, within=30)
    return of_test(records, test_id)


def assert_secret_nowhere(secret: str, *places: bytes) -> None:
    for place in places:
        assert secret.encode() not in place
        assert FIXTURE_SECRET not in place


def kafka_bytes(*topics: list[KafkaRecord]) -> bytes:
    return b"".join(r.value + b"".join(r.headers.values()) for rs in topics for r in rs)


async def test_an_export_is_downloaded_and_its_events_published(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, files: FileServer
) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    body = export_finished(signed_url(files, secret))
    test_id = str(body["contextObjectId"])
    response = await post(client, orjson.dumps(body))
    assert response.status_code == 200
    assert response.content == b""

    records = await export_records(kafka, gateway.canonical_topic, test_id)
    for record in records:
        assert not CANONICAL.errors(record), CANONICAL.errors(record)
    exported = [r for r in records if r["data"]["vendor"].get("source") == "test_events_export"]
    assert len(exported) == EXPORT_EVENTS
    assert sorted(r["type"] for r in exported) == [
        "edu.activity.generic",
        "edu.activity.generic",
        "edu.activity.generic",
        "edu.proctoring.flagged",
        "edu.proctoring.flagged",
    ]
    assert {r["data"]["learner"]["id"] for r in exported} == {"110001", "110002"}
    (flag,) = [r for r in exported if r["data"]["action"] == "invigilator_flag"]
    assert flag["data"]["actor"] == {"id": "220002"}
    assert flag["data"]["proctoring"]["attachments"] == [
        {"file_name": "desk-0915.jpg", "content_item_id": "5512345", "file_size": 204800}
    ]
    assert flag["partitionkey"] == f"demo|110001|{test_id}"
    (notice,) = [r for r in records if r["type"] == "edu.activity.generic" and r not in exported]
    assert notice["data"]["vendor"]["fields"] == {"url": "[redacted]"}

    ingested = await wait_for_log(gateway, export_log("inspera_export_ingested", test_id))
    assert (ingested["published"], ingested["candidates"], ingested["deadlettered"]) == (5, 3, 0)
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    assert_secret_nowhere(secret, kafka_bytes(canonical, dead), gateway.log_path.read_bytes())
    assert len(files.requests) == 1


async def test_the_same_export_is_not_ingested_twice(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, files: FileServer
) -> None:
    secret = f"SECRET-{uuid.uuid4().hex}"
    body = export_finished(signed_url(files, secret))
    test_id = body["contextObjectId"]
    raw = orjson.dumps(body)
    assert (await post(client, raw)).status_code == 200
    await wait_for_log(gateway, export_log("inspera_export_ingested", test_id))

    # The same notification again (Inspera's retry): the job is known, nothing is fetched.
    assert (await post(client, raw)).status_code == 200
    await wait_for_log(gateway, export_log("inspera_export_known", test_id))
    assert len(files.requests) == 1

    # Another notification of the same export (a new timestamp): fetched again, but every
    # event is a duplicate of a published record.
    again = {**body, "timestamp": "2024-05-14T12:45:00Z"}
    assert (await post(client, orjson.dumps(again))).status_code == 200

    def second_ingest(line: dict[str, Any]) -> bool:
        return export_log("inspera_export_ingested", test_id)(line) and line["duplicates"] > 0

    ingested = await wait_for_log(gateway, second_ingest)
    assert (ingested["published"], ingested["duplicates"]) == (0, EXPORT_EVENTS)
    assert len(files.requests) == 2
    records = of_test(await kafka.settle(gateway.canonical_topic), test_id)
    # Two notification records (their timestamps differ) and each export event once.
    assert len(records) == EXPORT_EVENTS + 2
    assert len({r["id"] for r in records}) == len(records)


async def test_a_host_not_on_the_allow_list_is_never_contacted(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    # 127.0.0.2 is this machine too, but not on the dev allow-list (127.0.0.1, localhost).
    with FileServer(host="127.0.0.2") as elsewhere:
        secret = f"SECRET-{uuid.uuid4().hex}"
        body = export_finished(signed_url(elsewhere, secret))
        assert (await post(client, orjson.dumps(body))).status_code == 200
        failed = await wait_for_log(
            gateway, export_log("inspera_export_failed", body["contextObjectId"])
        )
        assert (failed["reason"], failed["host"], failed["attempts"]) == (
            "host_not_allowed",
            "127.0.0.2",
            1,
        )
        assert elsewhere.requests == []
    records = of_test(await kafka.settle(gateway.canonical_topic), body["contextObjectId"])
    assert [r["data"]["action"] for r in records] == ["event_by_candidates_export_finished"]
    assert_secret_nowhere(secret, gateway.log_path.read_bytes())


@pytest.fixture(scope="module")
def strict_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway as in production: https downloads only."""
    env = {"GATEWAY_INSPERA_ALLOW_HTTP_DOWNLOADS": "false"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("strict"), env)


async def test_plain_http_is_refused_outside_dev(
    strict_gateway: Gateway, files: FileServer
) -> None:
    body = export_finished(signed_url(files, "SECRET-http"))
    async with httpx.AsyncClient(base_url=strict_gateway.url, timeout=30) as client:
        assert (await post(client, orjson.dumps(body))).status_code == 200
    failed = await wait_for_log(
        strict_gateway, export_log("inspera_export_failed", body["contextObjectId"])
    )
    assert failed["reason"] == "http_not_allowed"
    assert files.requests == []


@pytest.fixture(scope="module")
def small_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that takes exports of at most 2 KiB."""
    env = {"GATEWAY_INSPERA_MAX_EXPORT_BYTES": "2048"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("small"), env)


async def test_an_export_over_the_size_limit_is_refused(
    small_gateway: Gateway, kafka: TopicReader, files: FileServer
) -> None:
    assert EXPORT.stat().st_size > 2048
    body = export_finished(signed_url(files, "SECRET-big"))
    async with httpx.AsyncClient(base_url=small_gateway.url, timeout=30) as client:
        assert (await post(client, orjson.dumps(body))).status_code == 200
    failed = await wait_for_log(
        small_gateway, export_log("inspera_export_failed", body["contextObjectId"])
    )
    assert (failed["reason"], failed["attempts"]) == ("too_large", 1)  # not retried
    assert len(files.requests) == 1
    records = of_test(await kafka.settle(small_gateway.canonical_topic), body["contextObjectId"])
    assert [r["data"]["action"] for r in records] == ["event_by_candidates_export_finished"]


async def test_a_pending_download_survives_a_restart(
    broker: str, kafka: TopicReader, tmp_path: Path
) -> None:
    fast_retries = {
        "GATEWAY_INSPERA_RETRY_INITIAL_SECONDS": "0.2",
        "GATEWAY_INSPERA_RETRY_MAX_SECONDS": "0.5",
    }
    files = FileServer(port=free_port())  # its port is named now, it listens only later
    secret = f"SECRET-{uuid.uuid4().hex}"
    body = export_finished(signed_url(files, secret))
    test_id = body["contextObjectId"]

    first = start_gateway(broker, tmp_path, fast_retries)
    try:
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as client:
            assert (await post(client, orjson.dumps(body))).status_code == 200
        retry = await wait_for_log(first, export_log("inspera_export_retry", test_id))
        assert retry["reason"].startswith("transport_")
    finally:
        stop_gateway(first)
    assert of_test(await kafka.settle(first.canonical_topic, quiet=0.5), test_id) != []

    second = start_gateway(broker, tmp_path, fast_retries, suffix=first.suffix)
    try:
        with files:
            records = await export_records(kafka, first.canonical_topic, test_id)
            ingested = await wait_for_log(second, export_log("inspera_export_ingested", test_id))
        assert ingested["published"] == EXPORT_EVENTS
        assert ingested["attempts"] >= 2
        assert len(records) == EXPORT_EVENTS + 1
        # The second gateway never got the webhook: the job came from the state dir.
        assert not [line for line in second.log_lines() if line.get("event") == "request"]
        assert_secret_nowhere(secret, first.log_path.read_bytes(), second.log_path.read_bytes())
    finally:
        stop_gateway(second)


def run_export(
    broker: str, fake: FakeInspera, tmp_path: Path, test_id: str, api_key: str = API_KEY
) -> tuple[subprocess.CompletedProcess[str], str]:
    """`gateway inspera export` as an operator runs it; returns it and its canonical topic."""
    suffix = uuid.uuid4().hex[:8]
    topic = f"edu.events.v1.{suffix}"
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": topic,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"edu.events.deadletter.v1.{suffix}",
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path / f"state-{suffix}"),
        "GATEWAY_INSPERA_API_BASE_URL": fake.url,
        "GATEWAY_INSPERA_CLIENT_ID": fake.client_id,
        "GATEWAY_INSPERA_POLL_INTERVAL_SECONDS": "0.05",
        "INSPERA_API_KEY": api_key,
    }
    command = [sys.executable, "-m", "gateway.cli", "inspera", "export", "--test-id", test_id]
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    return done, topic


@pytest.fixture
def inspera() -> Iterator[FakeInspera]:
    fake = FakeInspera().start()
    try:
        yield fake
    finally:
        fake.stop()


async def test_the_export_command_orders_polls_and_ingests(
    broker: str, kafka: TopicReader, inspera: FakeInspera, tmp_path: Path
) -> None:
    inspera.files["export.json"] = EXPORT.read_bytes()
    inspera.states = [
        {"status": "RUNNING", "progress": 30},
        {"status": "RUNNING", "progress": 70},
        {"status": "FINISHED", "progress": 100, "url": inspera.file_url("export.json")},
    ]
    test_id = str(fresh_test_id())
    done, topic = await asyncio.to_thread(run_export, broker, inspera, tmp_path, test_id)
    assert done.returncode == 0, done.stderr
    assert inspera.ordered == [test_id]
    assert len(inspera.polls) == 3
    assert "export job" in done.stderr
    assert "publishing   [##############################] 100.0%" in done.stderr
    assert f"test {test_id}: 5 events of 3 candidates, 5 published" in done.stderr
    # Neither the API key, the token nor the pre-signed URL is shown.
    for secret in (API_KEY, "token-1", "FIXTURE-SECRET-file"):
        assert secret not in done.stdout + done.stderr
    # The bearer token goes to Inspera's API only, never to the file's host.
    (file_request,) = inspera.file_requests
    assert "Authorization" not in file_request

    records = await kafka.read(topic, lambda rs: len(rs) >= EXPORT_EVENTS)
    assert len(records) == EXPORT_EVENTS
    for record in records:
        event = record.json()
        assert not CANONICAL.errors(event), CANONICAL.errors(event)
        assert event["data"]["assessment"] == {"id": test_id}
        assert event["tenant"] == "demo"
    assert FIXTURE_SECRET not in kafka_bytes(records)


async def test_the_export_command_fails_cleanly_on_a_wrong_key(
    broker: str, inspera: FakeInspera, tmp_path: Path
) -> None:
    done, _ = await asyncio.to_thread(run_export, broker, inspera, tmp_path, "1", "wrong-key")
    assert done.returncode == 1
    assert "authentication failed: HTTP 401" in done.stderr
    assert "wrong-key" not in done.stdout + done.stderr
    assert inspera.ordered == []
