"""Tenancy against a real `gateway serve` and the real broker: a credential opens one vendor of one
tenant only; the tenant of a record is its credential's whatever the payload claims; rotated
secrets (from a variable) and Standard Webhooks signatures work end to end; a refused request
publishes and dead-letters nothing, is counted and logged without its secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import Gateway, running_gateway
from tests.support.inspera import notification
from tests.support.kafka import TopicReader

A_CALIPER, A_CANVAS = "tenant-a-caliper-token", "tenant-a-canvas-token"
B_OLD, B_NEW = "tenant-b-caliper-old", "tenant-b-caliper-new"
A_WEBHOOK_KEY = b"tenant-a-standard-webhooks-key!!"
CANVAS_EVENTS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
SECRETS = (A_CALIPER, A_CANVAS, B_OLD, B_NEW)

CONFIG = f"""
[kafka]
enable_idempotence = false
topic_partitions = 3
topic_replication_factor = 1

[logging]
format = "json"

[[tenants]]
name = "a"

[[tenants.credentials]]
vendor = "caliper"
secret = "{A_CALIPER}"

[[tenants.credentials]]
vendor = "canvas"
secret = "{A_CANVAS}"

[[tenants.credentials]]
vendor = "inspera"
scheme = "standard-webhooks"
secret = "whsec_{base64.b64encode(A_WEBHOOK_KEY).decode()}"

[[tenants]]
name = "b"

[[tenants.credentials]]
vendor = "caliper"
secrets_env = "TENANT_B_CALIPER_TOKENS"
"""


@pytest.fixture(scope="module")
def tenancy(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"TENANT_B_CALIPER_TOKENS": f"{B_OLD},{B_NEW}"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("tenancy"), env, config=CONFIG)


@pytest.fixture
async def http(tenancy: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tenancy.url, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def canvas_body() -> bytes:
    event = {"client_timestamp": "2026-03-02T09:00:00Z", "event_type": "session_started"}
    return orjson.dumps({"quiz_submission_events": [event]})


async def records_about(kafka: TopicReader, topic: str, needle: str, count: int) -> list[Any]:
    records = await kafka.read(
        topic, lambda rs: sum(needle in r.value.decode() for r in rs) >= count
    )
    return [r.json() for r in records if needle in r.value.decode()]


async def test_a_credential_opens_its_own_vendor_only(
    http: httpx.AsyncClient, tenancy: Gateway, kafka: TopicReader
) -> None:
    # Tenant A's Caliper token on Canvas, and its Canvas token on Caliper: both refused.
    canvas = await http.post(CANVAS_EVENTS, content=canvas_body(), headers=bearer(A_CALIPER))
    assert canvas.status_code == 401
    assert canvas.json() == {"errors": [{"message": "Invalid access token."}]}
    quiz_log = await http.get(CANVAS_EVENTS, headers=bearer(B_NEW))
    assert quiz_log.status_code == 401
    marker = f"urn:uuid:{uuid.uuid4()}"
    caliper_body = orjson.dumps(envelope(assessment_started(marker)))
    caliper = await http.post("/v1/caliper", content=caliper_body, headers=bearer(A_CANVAS))
    assert caliper.status_code == 401
    assert caliper.headers["content-type"] == "application/problem+json"

    # Nothing published, nothing dead-lettered (the gateway has topics of its own, and no test
    # here sends anything that would be dead-lettered).
    published = await kafka.settle(tenancy.canonical_topic)
    assert not [r for r in published if r.json()["vendor"] == "canvas"]
    assert not [r for r in published if marker in r.value.decode()]
    assert await kafka.settle(tenancy.deadletter_topic) == []

    # Counted per vendor, and logged with a reason, never with the secret presented.
    text = (await http.get(f"{tenancy.admin_url}/metrics")).text
    failures = {
        s.labels["vendor"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gateway_auth_failures_total"
    }
    assert failures["canvas"] >= 2
    assert failures["caliper"] >= 1
    lines = [line for line in tenancy.log_lines() if line["event"] == "auth_failed"]
    assert {(line["vendor"], line["reason"]) for line in lines} >= {
        ("canvas", "invalid credentials"),
        ("caliper", "invalid credentials"),
    }
    log_text = tenancy.log_path.read_text(encoding="utf-8")
    for secret in SECRETS:
        assert secret not in log_text


async def test_the_tenant_is_the_credentials_whatever_the_payload_claims(
    http: httpx.AsyncClient, tenancy: Gateway, kafka: TopicReader
) -> None:
    # The same event, claiming tenant "a" everywhere it can, sent with tenant B's rotated
    # tokens (old and new: both active) and with tenant A's.
    marker = f"urn:uuid:{uuid.uuid4()}"
    event = assessment_started(marker)
    event["extensions"] = {"tenant": "a", "source": "/tenants/a/vendors/caliper"}
    body = envelope(event)
    body["sensor"] = "https://a.example.edu/tenants/a"
    raw = orjson.dumps(body)
    for token in (B_OLD, B_NEW, A_CALIPER):
        response = await http.post("/v1/caliper", content=raw, headers=bearer(token))
        assert response.status_code == 200, response.text

    records = await records_about(kafka, tenancy.canonical_topic, marker, 2)
    by_tenant = {r["tenant"]: r for r in records}
    assert sorted(r["tenant"] for r in records) == ["a", "b"]  # B's re-send is B's duplicate
    assert by_tenant["b"]["source"] == "/tenants/b/vendors/caliper"
    assert by_tenant["b"]["partitionkey"].startswith("b|")
    assert by_tenant["a"]["id"] != by_tenant["b"]["id"]


def webhook_headers(body: bytes, key: bytes, webhook_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    content = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": f"v1,{signature}",
    }


async def test_standard_webhooks_on_a_vendor_route(
    http: httpx.AsyncClient, tenancy: Gateway, kafka: TopicReader
) -> None:
    good = notification()
    raw = orjson.dumps(good)
    headers = webhook_headers(raw, A_WEBHOOK_KEY, f"msg_{uuid.uuid4().hex}")
    assert (
        await http.post("/v1/inspera/webhooks", content=raw, headers=headers)
    ).status_code == 200

    forged = notification()
    forged_raw = orjson.dumps(forged)
    bad = webhook_headers(forged_raw, b"not-the-key-of-any-tenant-at-all", "msg_forged")
    refused = await http.post("/v1/inspera/webhooks", content=forged_raw, headers=bad)
    assert refused.status_code == 401
    # Signed for another body: the signature covers the raw bytes.
    swapped = await http.post("/v1/inspera/webhooks", content=forged_raw, headers=headers)
    assert swapped.status_code == 401

    (record,) = await records_about(kafka, tenancy.canonical_topic, str(good["contextObjectId"]), 1)
    assert record["tenant"] == "a"
    settled = await kafka.settle(tenancy.canonical_topic)
    assert not [r for r in settled if str(forged["contextObjectId"]) in r.value.decode()]
