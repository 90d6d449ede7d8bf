"""The Inspera webhook route end to end: signed JSON in over real HTTP, canonical records out of
the real broker, as Inspera and a Kafka consumer see them."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from gateway.canonical import content_digest, record_id
from tests.support.gateway import Gateway
from tests.support.inspera import notification, of_test, post, sign
from tests.support.kafka import TopicReader
from tests.support.schemas import SCHEMAS

CANONICAL = SCHEMAS.get("canonical/event.schema.json")
DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")


def expected_id(body: dict[str, Any]) -> str:
    identity = f"{body['event']}|{body['contextObjectId']}|{body.get('timestamp') or ''}"
    return record_id("demo", "inspera", identity, content_digest(body))


def request_line(gateway: Gateway, request_id: str) -> dict[str, Any]:
    (line,) = [
        entry
        for entry in gateway.log_lines()
        if entry.get("event") == "request" and entry.get("request_id") == request_id
    ]
    return line


async def test_a_signed_notification_becomes_a_generic_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    body = notification()
    raw = orjson.dumps(body)
    response = await post(client, raw)
    assert response.status_code == 200
    assert response.content == b""

    wanted = expected_id(body)
    records = await kafka.read(
        gateway.canonical_topic, lambda rs: wanted in [r.json()["id"] for r in rs]
    )
    (record,) = [r for r in records if r.json()["id"] == wanted]
    assert record.headers["content-type"] == b"application/cloudevents+json"
    event = record.json()
    assert not CANONICAL.errors(event), CANONICAL.errors(event)
    assert event["type"] == "edu.activity.generic"
    assert event["source"] == "/tenants/demo/vendors/inspera"
    assert event["time"] == "2024-05-14T12:00:00.000Z"
    test_id = str(body["contextObjectId"])
    assert event["data"] == {
        "action": "confirm_final_grades",
        "assessment": {"id": test_id},
        "vendor": {
            "name": "inspera",
            "event_type": "confirm_final_grades",
            "context_object_id": test_id,
        },
    }
    assert record.key == f"demo||{test_id}".encode()


@pytest.mark.parametrize(
    "signature",
    [None, "", "0" * 40, "not-hex", "wrong-secret", "other-body"],
)
async def test_a_bad_or_missing_signature_gets_401_and_publishes_nothing(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, signature: str | None
) -> None:
    body = notification()
    raw = orjson.dumps(body)
    if signature == "wrong-secret":
        signature = sign(raw, "not-the-secret")
    elif signature == "other-body":
        signature = sign(raw + b" ")
    response = await post(client, raw, signature)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert "www-authenticate" not in response.headers  # no HTTP auth scheme: none to name
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    assert of_test(canonical, body["contextObjectId"]) == []
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    assert str(body["contextObjectId"]).encode() not in b"".join(r.value for r in dead)


async def test_upper_case_hex_signatures_are_taken(client: httpx.AsyncClient) -> None:
    raw = orjson.dumps(notification())
    assert (await post(client, raw, sign(raw).upper())).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"", "application/json"), (b"", ""), (b"{}", "application/json")],
    ids=["empty", "empty-no-type", "empty-object"],
)
async def test_a_subscription_validation_gets_200_and_publishes_nothing(
    client: httpx.AsyncClient, gateway: Gateway, body: bytes, content_type: str
) -> None:
    marker = uuid.uuid4().hex
    response = await post(client, body, request_id=marker, content_type=content_type)
    assert response.status_code == 200
    line = request_line(gateway, marker)
    assert (line["tenant"], line["accepted"], line["deadlettered"]) == ("demo", 0, 0)


async def test_a_validation_post_is_signed_too(client: httpx.AsyncClient) -> None:
    assert (await post(client, b"", signature=None)).status_code == 401


async def test_a_redelivery_is_published_once(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    body = notification("submissions_export_finished")
    raw = orjson.dumps(body)
    markers = [uuid.uuid4().hex for _ in range(3)]
    for marker in markers:  # Inspera retries 3 times when it gets no 200 in time
        assert (await post(client, raw, request_id=marker)).status_code == 200
    records = await kafka.settle(gateway.canonical_topic)
    assert [r["id"] for r in of_test(records, body["contextObjectId"])] == [expected_id(body)]
    assert [request_line(gateway, m)["duplicates"] for m in markers] == [0, 1, 1]


async def test_an_unknown_event_is_published_as_generic_activity(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    body = notification("grading_reopened", extra={"note": "kept"})
    assert (await post(client, orjson.dumps(body))).status_code == 200
    wanted = expected_id(body)
    records = await kafka.read(
        gateway.canonical_topic, lambda rs: wanted in [r.json()["id"] for r in rs]
    )
    (event,) = [r.json() for r in records if r.json()["id"] == wanted]
    assert not CANONICAL.errors(event)
    assert event["type"] == "edu.activity.generic"
    assert event["data"]["action"] == "grading_reopened"
    assert "assessment" not in event["data"]  # its object is not known to be a test
    assert event["data"]["vendor"]["fields"] == {"extra": {"note": "kept"}}


async def test_invalid_json_is_400_and_kept_as_a_dead_letter(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    marker = uuid.uuid4().hex
    response = await post(client, b'{"event": ', request_id=marker)
    assert response.status_code == 400
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: marker in [r.json()["request_id"] for r in rs]
    )
    (letter,) = [r.json() for r in dead if r.json()["request_id"] == marker]
    assert not DEADLETTER.errors(letter)
    assert letter["reason"] == "malformed_payload"


async def test_a_notification_without_event_is_200_and_a_dead_letter(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    marker = uuid.uuid4().hex
    body = {"subscriptionId": marker}
    response = await post(client, orjson.dumps(body), request_id=marker)
    assert response.status_code == 200
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: marker in [r.json()["request_id"] for r in rs]
    )
    (letter,) = [r.json() for r in dead if r.json()["request_id"] == marker]
    assert not DEADLETTER.errors(letter)
    assert letter["reason"] == "schema_violation"
    assert letter["original"] == body
