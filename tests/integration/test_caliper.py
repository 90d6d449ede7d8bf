"""The Caliper receiver end to end: real HTTP in, real Kafka out, as sensors and consumers see."""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat

from tests.support.caliper import AUTH, assessment_started, envelope, expected_id
from tests.support.gateway import Gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "caliper" / "in"
V1P2 = "http://purl.imsglobal.org/ctx/caliper/v1p2"
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")


def ids_of(records: list[KafkaRecord]) -> list[str]:
    return [r.json()["id"] for r in records]


def originals(records: list[KafkaRecord]) -> list[Any]:
    return [r.json().get("original") for r in records]


async def post(client: httpx.AsyncClient, body: Any, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/caliper",
        content=orjson.dumps(body),
        headers={"Content-Type": "application/json", **AUTH, **headers},
    )


async def wait_for_ids(kafka: TopicReader, topic: str, ids: set[str]) -> list[KafkaRecord]:
    return await kafka.read(topic, lambda rs: ids <= set(ids_of(rs)))


async def test_envelope_becomes_canonical_cloudevents(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = assessment_started()
    response = await post(client, envelope(event))
    assert response.status_code == 200
    assert response.content == b""

    records = await wait_for_ids(kafka, gateway.canonical_topic, {expected_id(event)})
    (record,) = [r for r in records if r.json()["id"] == expected_id(event)]
    assert record.headers["content-type"] == b"application/cloudevents+json"
    body = record.json()
    assert not CANONICAL.errors(body), CANONICAL.errors(body)
    assert record.key == body["partitionkey"].encode()
    assert body["partitionkey"] == (
        "demo|https://example.edu/users/554433|"
        "https://example.edu/terms/201601/courses/7/sections/1/assess/1"
    )
    # Any CloudEvents SDK decodes it: here the official Python SDK's Kafka binding.
    decoded = from_structured(
        KafkaMessage(headers=record.headers, key=record.key, value=record.value), JSONFormat()
    )
    assert decoded.get_type() == "edu.assessment.attempt.started"
    assert decoded.get_source() == "/tenants/demo/vendors/caliper"
    assert decoded.get_id() == expected_id(event)
    assert decoded.get_extension("tenant") == "demo"
    assert decoded.get_extension("vendor") == "caliper"
    assert body["time"] == "2026-11-26T09:00:00.000Z"  # +01:00 normalized to UTC, milliseconds
    data = decoded.get_data()
    assert isinstance(data, dict)
    assert data["learner"] == {"id": "https://example.edu/users/554433"}
    assert data["assessment"]["max_score"] == 25.0
    assert data["attempt"]["count"] == 1
    assert data["vendor"]["event_id"] == event["id"]


@pytest.mark.parametrize(
    "authorization", ["Bearer dev-token", "bearer dev-token", "dev-token"], ids=str
)
async def test_bearer_and_raw_key_authenticate(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await post(client, envelope(assessment_started()), Authorization=authorization)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "authorization", [None, "", "Bearer wrong", "wrong", "Basic ZGV2LXRva2Vu"], ids=repr
)
async def test_bad_credentials_get_401_and_publish_nothing(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, authorization: str | None
) -> None:
    event = assessment_started()
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = await client.post(
        "/v1/caliper", content=orjson.dumps(envelope(event)), headers=headers
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750: the scheme to use
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    assert expected_id(event) not in ids_of(canonical)
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    assert event not in originals(dead)


async def test_other_content_type_gets_415(client: httpx.AsyncClient) -> None:
    response = await post(client, envelope(assessment_started()), **{"Content-Type": "text/plain"})
    assert response.status_code == 415
    assert "application/json" in response.json()["detail"]


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = await post(client, envelope(assessment_started()), **headers)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "expected a Caliper Envelope"),
        (orjson.dumps(assessment_started()), "bare Caliper event"),
        (
            orjson.dumps({"sensor": "s", "dataVersion": V1P2, "data": []}),
            "not a valid caliper envelope",
        ),
        (orjson.dumps({**envelope(), "data": "nope"}), "not a valid caliper envelope"),
        (orjson.dumps(envelope()), "not a valid caliper envelope"),
    ],
    ids=["invalid-json", "array", "bare-event", "no-sendTime", "data-not-array", "empty-data"],
)
async def test_malformed_or_missing_envelope_gets_400(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, body: bytes, detail: str
) -> None:
    marker = uuid.uuid4().hex
    response = await client.post(
        "/v1/caliper",
        content=body,
        headers={"Content-Type": "application/json", **AUTH, "X-Request-Id": marker},
    )
    assert response.status_code == 400
    problem = response.json()
    assert detail in problem["detail"]
    # The body is kept whole in the dead-letter topic, for a fix and a replay.
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: marker in [r.json()["request_id"] for r in rs]
    )
    (letter,) = [r.json() for r in dead if r.json()["request_id"] == marker]
    assert not DEADLETTER.errors(letter), DEADLETTER.errors(letter)
    assert letter["reason"] == "malformed_payload"
    assert letter["original_body"] == body.decode()


async def test_missing_send_time_names_the_pointer(client: httpx.AsyncClient) -> None:
    body = envelope(assessment_started())
    del body["sendTime"]
    problem = (await post(client, body)).json()
    assert problem["status"] == 400
    assert any("sendTime" in e["detail"] for e in problem["errors"])


async def test_empty_data_names_the_pointer(client: httpx.AsyncClient) -> None:
    """The spec's `data` is "an ordered collection of one or more" events or entities."""
    problem = (await post(client, envelope())).json()
    assert problem["status"] == 400
    assert [e["pointer"] for e in problem["errors"]] == ["/data"]


async def test_nulls_are_absent_and_the_original_stays_as_sent(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    """JSON-LD: an optional property sent as null is absent. The record carries no null; a
    dead letter keeps the event as sent, nulls included; a null required property is refused."""
    unset = dict.fromkeys(("edApp", "federatedSession", "membership", "session", "target"))
    good = {**assessment_started(), **unset, "extensions": {"kept": "x", "unset": None}}
    good["object"] = {**good["object"], "@context": V1P2, "dateCreated": None, "items": None}
    good["generated"] = {**good["generated"], "@context": V1P2, "duration": None}
    wrong_action = {**assessment_started(), **unset, "action": "Teleported"}
    null_actor = {**assessment_started(), **unset, "actor": None}
    assert (await post(client, envelope(good, wrong_action, null_actor))).status_code == 200

    (record,) = [
        r.json()
        for r in await wait_for_ids(kafka, gateway.canonical_topic, {expected_id(good)})
        if r.json()["id"] == expected_id(good)
    ]
    assert record["type"] == "edu.assessment.attempt.started"
    assert record["data"]["vendor"]["extensions"] == {"kept": "x"}
    assert "null" not in orjson.dumps(record).decode()
    dead = await kafka.read(
        gateway.deadletter_topic,
        lambda rs: wrong_action in originals(rs) and null_actor in originals(rs),
    )
    letters = {
        r.json()["where"]: r.json()
        for r in dead
        if r.json().get("original") in (wrong_action, null_actor)
    }
    assert letters["/data/1"]["original"] == wrong_action  # as sent, its nulls included
    assert any(e["path"] == "/action" for e in letters["/data/1"]["errors"])
    assert letters["/data/2"]["original"]["actor"] is None
    assert any(e["path"] == "/actor" for e in letters["/data/2"]["errors"])


@pytest.mark.parametrize(
    "version",
    ["http://purl.imsglobal.org/ctx/caliper/v1p0", "http://purl.imsglobal.org/ctx/caliper/v2p0"],
)
async def test_unsupported_data_version_gets_422(client: httpx.AsyncClient, version: str) -> None:
    response = await post(client, envelope(assessment_started(), version=version))
    assert response.status_code == 422
    assert version in response.json()["detail"]


async def test_caliper_1_0_envelope_gets_422(client: httpx.AsyncClient) -> None:
    body = (FIXTURES / "ims" / "v1p0" / "caliperEnvelopeEventViewViewedMinimal.json").read_bytes()
    response = await client.post(
        "/v1/caliper", content=body, headers={"Content-Type": "application/json", **AUTH}
    )
    assert response.status_code == 422
    assert "Caliper 1.0" in response.json()["detail"]


async def test_body_over_the_limit_gets_413(client: httpx.AsyncClient) -> None:
    limit = 4 * 1024 * 1024
    big = envelope(assessment_started())
    big["data"][0]["extensions"] = {"padding": "x" * limit}
    response = await post(client, big)
    assert response.status_code == 413


async def test_chunked_body_over_the_limit_gets_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> Any:
        for _ in range(5):
            yield b" " * (1024 * 1024)

    response = await client.post(
        "/v1/caliper", content=chunks(), headers={"Content-Type": "application/json", **AUTH}
    )
    assert response.status_code == 413


async def test_invalid_events_are_dead_lettered_and_the_envelope_still_succeeds(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    good = assessment_started()
    no_actor = assessment_started()
    del no_actor["actor"]
    wrong_action = assessment_started()
    wrong_action["action"] = "Deleted"
    response = await post(client, envelope(good, no_actor, wrong_action))
    assert response.status_code == 200

    canonical = await wait_for_ids(kafka, gateway.canonical_topic, {expected_id(good)})
    assert expected_id(no_actor) not in ids_of(canonical)
    assert expected_id(wrong_action) not in ids_of(canonical)
    dead = await kafka.read(
        gateway.deadletter_topic,
        lambda rs: wrong_action in originals(rs) and no_actor in originals(rs),
    )
    letters = {
        r.json()["where"]: r.json()
        for r in dead
        if r.json().get("original") in (no_actor, wrong_action)
    }
    assert set(letters) == {"/data/1", "/data/2"}
    for letter in letters.values():
        assert not DEADLETTER.errors(letter), DEADLETTER.errors(letter)
        assert letter["reason"] == "schema_violation"
        assert letter["tenant"] == "demo"
        assert letter["vendor"] == "caliper"
        assert letter["errors"]
    assert any("actor" in e["message"] for e in letters["/data/1"]["errors"])
    assert any(e["path"] == "/action" for e in letters["/data/2"]["errors"])


async def test_resent_envelope_makes_no_second_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = assessment_started()
    changed = copy.deepcopy(event)
    changed["generated"]["count"] = 2  # same vendor id, other content: a new event, kept
    for body in (envelope(event), envelope(event), envelope(event, event), envelope(changed)):
        assert (await post(client, body)).status_code == 200
    records = await wait_for_ids(kafka, gateway.canonical_topic, {expected_id(changed)})
    records = await kafka.settle(gateway.canonical_topic, quiet=1.0)
    ids = ids_of(records)
    assert ids.count(expected_id(event)) == 1
    assert ids.count(expected_id(changed)) == 1
    assert expected_id(event) != expected_id(changed)


async def test_concurrent_requests_are_all_acknowledged_and_published(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    events = [assessment_started(learner=str(n)) for n in range(60)]
    responses = await asyncio.gather(*(post(client, envelope(e)) for e in events))
    assert [r.status_code for r in responses] == [200] * len(events)
    expected = {expected_id(e) for e in events}
    records = await wait_for_ids(kafka, gateway.canonical_topic, expected)
    assert expected <= set(ids_of(records))


async def test_endpoint_configuration_on_get(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/caliper", headers=AUTH)
    assert response.status_code == 200
    config = response.json()
    assert config["caliperSupportedVersions"] == [
        "http://purl.imsglobal.org/ctx/caliper/v1p1",
        V1P2,
    ]
    assert config["caliper_supported_versions"] == config["caliperSupportedVersions"]
    assert config["caliperMaximumPayloadSize"] == 4096
    refused = await client.get("/v1/caliper")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
