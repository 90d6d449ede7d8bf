"""Pearson LearningStudio eventing end to end: deliveries signed as Pearson signs them, posted as
real url-encoded forms over real HTTP to `gateway serve`, and what a Kafka consumer reads back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat

from gateway.canonical import content_digest, record_id
from tests.support.gateway import Gateway, running_gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.pearson import (
    DELIVERIES,
    FORM,
    GOLDEN,
    STUDENT_EXAM_COMPLETED,
    delivery,
    fixture_fields,
    form,
    fresh_exam_completed,
    pearson_timestamp,
    sign,
)
from tests.support.schemas import SCHEMAS

PATH = "/v1/pearson/eventing"
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")


def message_of(fields: dict[str, str]) -> dict[str, Any]:
    """The message the gateway keeps: the fields that are the same on every redelivery."""
    message: dict[str, Any] = {
        k: fields[k] for k in ("MESSAGE-ID", "MESSAGE-TYPE", "PAYLOAD-CONTENT-TYPE")
    }
    message["PAYLOAD"] = orjson.loads(fields["PAYLOAD"])
    return message


def expected_id(fields: dict[str, str], tenant: str = "demo") -> str:
    return record_id(tenant, "pearson", fields["MESSAGE-ID"], content_digest(message_of(fields)))


async def post(
    client: httpx.AsyncClient,
    fields: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    content_type: str = FORM,
    request_id: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if request_id:
        headers["X-Request-Id"] = request_id
    content = body if body is not None else form(fields or {})
    return await client.post(PATH, content=content, headers=headers)


def message_ids(records: list[KafkaRecord]) -> list[str]:
    return [r.json()["data"]["vendor"].get("message_id") for r in records]


async def records_of(kafka: TopicReader, gateway: Gateway, message_id: str) -> list[KafkaRecord]:
    """The canonical records of one MESSAGE-ID, once at least one has arrived."""
    records = await kafka.read(gateway.canonical_topic, lambda rs: message_id in message_ids(rs))
    return [r for r in records if r.json()["data"]["vendor"].get("message_id") == message_id]


async def dead_letter(kafka: TopicReader, gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The one dead letter of a request (found by its X-Request-Id)."""
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: request_id in [r.json()["request_id"] for r in rs]
    )
    letters: list[dict[str, Any]] = [r.json() for r in dead]
    (letter,) = [letter for letter in letters if letter["request_id"] == request_id]
    assert not DEADLETTER.errors(letter), DEADLETTER.errors(letter)
    return letter


async def test_a_signed_delivery_becomes_a_canonical_cloudevent(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    # Signed two days ago: a redelivery still carrying its first timestamp is within the window.
    fields = delivery(
        fresh_exam_completed(), timestamp=pearson_timestamp(datetime.now(UTC) - timedelta(days=2))
    )
    response = await post(client, fields)
    assert response.status_code == 200
    assert response.content == b""

    (record,) = await records_of(kafka, gateway, fields["MESSAGE-ID"])
    assert record.headers["content-type"] == b"application/cloudevents+json"
    body = record.json()
    assert not CANONICAL.errors(body), CANONICAL.errors(body)
    assert body["id"] == expected_id(fields)
    assert record.key == body["partitionkey"].encode() == b"demo|7777777|123456"
    decoded = from_structured(
        KafkaMessage(headers=record.headers, key=record.key, value=record.value), JSONFormat()
    )
    assert decoded.get_type() == "edu.assessment.attempt.submitted"
    assert decoded.get_source() == "/tenants/demo/vendors/pearson"
    assert decoded.get_extension("tenant") == "demo"
    assert body["time"] == "2013-05-17T14:06:10.688Z"
    data = decoded.get_data()
    assert isinstance(data, dict)
    assert data["learner"] == {"id": "7777777", "type": "user"}
    assert data["assessment"] == {"id": "123456", "is_auto_grading_on": True}
    assert data["attempt"]["is_late"] is False
    assert data["institution"] == {"id": "epsamplestring", "ep_id": "987654"}
    assert data["vendor"]["delivery_id"] == fields["DELIVERY-ATTEMPT-ID"]
    assert "original" not in data  # off by default: it carries names and emails
    for personal in (b"John", b"Smith", b"john.smith@domain.com", b"jsmith123"):
        assert personal not in record.value


async def test_an_http_client_form_with_a_charset_and_non_ascii_text(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = fresh_exam_completed()
    event["contexts"]["course"]["title"] = "Análisis Matemático — 1 + 1 & más"
    fields = delivery(event)
    # httpx encodes the form itself, as Pearson's HTTP client does (UrlEncodedFormEntity, UTF-8).
    response = await client.post(
        PATH, data=fields, headers={"Content-Type": f"{FORM}; charset=UTF-8"}
    )
    assert response.status_code == 200
    (record,) = await records_of(kafka, gateway, fields["MESSAGE-ID"])
    assert record.json()["data"]["course"]["name"] == "Análisis Matemático — 1 + 1 & más"


@pytest.mark.parametrize(
    ("delimiter", "upper"), [("~", False), ("::", False), (None, True)], ids=str
)
async def test_declared_delimiters_and_upper_case_hex_authenticate(
    client: httpx.AsyncClient,
    gateway: Gateway,
    kafka: TopicReader,
    delimiter: str | None,
    upper: bool,
) -> None:
    fields = delivery(fresh_exam_completed(), delimiter=delimiter)
    if upper:
        principal, stamp, mac = fields["AUTHORIZATION"].split("|")
        fields["AUTHORIZATION"] = f"{principal}|{stamp}|{mac.upper()}"
    assert (await post(client, fields)).status_code == 200
    assert await records_of(kafka, gateway, fields["MESSAGE-ID"])


def _with_authorization(fields: dict[str, str], authorization: str) -> dict[str, str]:
    return {**fields, "AUTHORIZATION": authorization}


def bad_deliveries() -> dict[str, tuple[bytes, str, str]]:
    """Deliveries that must not authenticate: name -> (body, content type, MESSAGE-ID)."""
    good = delivery(fresh_exam_completed())
    principal, stamp, mac = good["AUTHORIZATION"].split("|")
    cases: dict[str, dict[str, str]] = {
        "wrong-mac": _with_authorization(good, f"{principal}|{stamp}|{'0' * 32}"),
        "non-ascii-mac": _with_authorization(good, f"{principal}|{stamp}|{'é' * 32}"),
        "wrong-principal": delivery(fresh_exam_completed(), principal="someone-else"),
        "wrong-secret": delivery(fresh_exam_completed(), secret="another-16-bytes"),
        "two-parts": _with_authorization(good, f"{principal}|{mac}"),
        "four-parts": _with_authorization(good, f"{principal}|{stamp}|{mac}|{mac}"),
        "undeclared-delimiter": _with_authorization(good, f"{principal}~{stamp}~{mac}"),
        "tampered-payload": {**good, "PAYLOAD": good["PAYLOAD"].replace("7777777", "7777778")},
        "no-authorization": {k: v for k, v in good.items() if k != "AUTHORIZATION"},
    }
    bodies = {name: (form(f), FORM, f["MESSAGE-ID"]) for name, f in cases.items()}
    # The right fields and signature, but as JSON or untyped: the signature travels in a form,
    # and a body that is not declared a form is not read as one.
    as_json = delivery(fresh_exam_completed())
    bodies["json-body"] = (orjson.dumps(as_json), "application/json", as_json["MESSAGE-ID"])
    untyped = delivery(fresh_exam_completed())
    bodies["no-content-type"] = (form(untyped), "", untyped["MESSAGE-ID"])
    return bodies


async def test_bad_credentials_get_401_and_publish_nothing(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sent: dict[str, str] = {}  # request id -> MESSAGE-ID
    for name, (body, content_type, message_id) in bad_deliveries().items():
        marker = f"bad-{name}-{uuid.uuid4().hex[:8]}"
        response = await post(client, body=body, content_type=content_type, request_id=marker)
        assert (name, response.status_code) == (name, 401)
        assert response.headers["content-type"] == "application/problem+json"
        assert "www-authenticate" not in response.headers  # no HTTP auth scheme: none to name
        sent[marker] = message_id
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    published = b"".join(r.value for r in canonical + dead)
    for marker, message_id in sent.items():
        # Nothing of these deliveries reached either topic: no dead letter, no record, no trace.
        assert marker.encode() not in published
        assert message_id.encode() not in published


async def test_a_redelivery_makes_no_second_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = fresh_exam_completed()
    first = delivery(event, timestamp=pearson_timestamp())
    later = pearson_timestamp(datetime.now(UTC) + timedelta(minutes=5))
    # Pearson's redelivery: same MESSAGE-ID and content; new attempt id, timestamp and MAC, and
    # (to be sure the content, not the bytes, is compared) the JSON re-serialized.
    redelivery = delivery(
        orjson.dumps(event, option=orjson.OPT_INDENT_2).decode(),
        message_id=first["MESSAGE-ID"],
        timestamp=later,
    )
    changed_event = orjson.loads(orjson.dumps(event))
    changed_event["object"]["isLateSubmission"] = True
    changed = delivery(changed_event, message_id=first["MESSAGE-ID"])
    for fields in (first, redelivery, first, changed):
        response = await post(client, fields)
        assert (response.status_code, response.content) == (200, b"")

    await kafka.read(gateway.canonical_topic, lambda rs: expected_id(changed) in _ids(rs))
    records = [
        r
        for r in await kafka.settle(gateway.canonical_topic, quiet=1.0)
        if r.json()["data"]["vendor"].get("message_id") == first["MESSAGE-ID"]
    ]
    # One record per distinct content: the redeliveries made none, the changed event is kept.
    assert sorted(_ids(records)) == sorted({expected_id(first), expected_id(changed)})
    (original,) = [r.json() for r in records if r.json()["id"] == expected_id(first)]
    assert original["data"]["vendor"]["delivery_id"] == first["DELIVERY-ATTEMPT-ID"]


def _ids(records: list[KafkaRecord]) -> list[str]:
    return [r.json()["id"] for r in records]


async def test_concurrent_redeliveries_make_one_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = fresh_exam_completed()
    first = delivery(event)
    copies = [delivery(event, message_id=first["MESSAGE-ID"]) for _ in range(8)]
    responses = await asyncio.gather(*(post(client, f) for f in [first, *copies]))
    assert [r.status_code for r in responses] == [200] * 9
    await records_of(kafka, gateway, first["MESSAGE-ID"])
    records = await kafka.settle(gateway.canonical_topic, quiet=1.0)
    assert message_ids(records).count(first["MESSAGE-ID"]) == 1


async def test_one_event_under_two_message_ids_is_one_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    # The payload's eventId identifies the event (Pearson's documentation): the same event sent
    # as two messages (two subscriptions, or a MESSAGE-ID made up around a captured delivery)
    # is one record; sent at once too. The same eventId with other content is another record.
    event = fresh_exam_completed()
    event["eventId"] = f"event-{uuid.uuid4().hex[:8]}"
    first = delivery(event)
    others = [delivery(event) for _ in range(4)]
    assert len({fields["MESSAGE-ID"] for fields in [first, *others]}) == 5
    assert (await post(client, first)).status_code == 200
    answers = await asyncio.gather(*(post(client, fields) for fields in others))
    assert [a.status_code for a in answers] == [200] * 4
    changed_event = dict(event, eventDate="2014-07-11T17:25:50.000Z")
    changed = delivery(changed_event)
    assert (await post(client, changed)).status_code == 200

    await kafka.read(gateway.canonical_topic, lambda rs: expected_id(changed) in _ids(rs))
    records = [
        r.json()
        for r in await kafka.settle(gateway.canonical_topic, quiet=1.0)
        if r.json()["data"]["vendor"].get("event_id") == event["eventId"]
    ]
    assert sorted(r["id"] for r in records) == sorted([expected_id(first), expected_id(changed)])
    logged = [e for e in gateway.log_lines() if e.get("vendor") == "pearson"]
    assert sum(e.get("duplicates", 0) for e in logged[-6:]) == 4


@dataclass(frozen=True)
class Poison:
    """An authenticated delivery whose content cannot become a canonical record."""

    payload: Any
    message_type: str
    reason: str
    pointer: str


POISON = {
    "invalid-json": Poison(
        '{"eventId": "1", "eventDate": "2013-',
        STUDENT_EXAM_COMPLETED,
        "schema_violation",
        "/PAYLOAD",
    ),
    "schema-violation": Poison(
        {"eventId": "1"}, STUDENT_EXAM_COMPLETED, "schema_violation", "/PAYLOAD"
    ),
    "gradebook-type": Poison(
        {"eventId": "1", "eventType": "pearson.ls.gradebook.grade.created"},
        "pearson.ls.gradebook.grade.created",
        "unmappable",
        "/MESSAGE-TYPE",
    ),
    "threads-type": Poison(
        {"eventId": "1", "eventType": "pearson.ls.threads.topic.created"},
        "pearson.ls.threads.topic.created",
        "unmappable",
        "/MESSAGE-TYPE",
    ),
}


@pytest.mark.parametrize("poison", POISON.values(), ids=POISON.keys())
async def test_authenticated_poison_is_dead_lettered_and_answered_200(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, poison: Poison
) -> None:
    # Any other answer makes Pearson redeliver this message for 72 hours.
    fields = delivery(poison.payload, message_type=poison.message_type)
    marker = uuid.uuid4().hex
    response = await post(client, fields, request_id=marker)
    assert (response.status_code, response.content) == (200, b"")

    letter = await dead_letter(kafka, gateway, marker)
    assert (letter["reason"], letter["tenant"], letter["vendor"]) == (
        poison.reason,
        "demo",
        "pearson",
    )
    assert poison.pointer in [e["path"] for e in letter["errors"]]
    # The message is kept whole for a replay: its id, its type and its payload (parsed when it
    # is JSON, else as sent). The credential and the per-delivery attempt id are not.
    assert letter["original"] == {
        "MESSAGE-ID": fields["MESSAGE-ID"],
        "MESSAGE-TYPE": poison.message_type,
        "PAYLOAD-CONTENT-TYPE": "application/json",
        "PAYLOAD": poison.payload,
    }
    assert fields["AUTHORIZATION"].split("|")[2] not in orjson.dumps(letter).decode()
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    assert fields["MESSAGE-ID"] not in message_ids(canonical)


async def test_a_repeated_field_cannot_replace_the_signed_value(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    event = fresh_exam_completed()
    fields = delivery(event)
    forged = dict(event, actor={**event["actor"], "id": "someone-else"})
    body = form(fields) + b"&" + form({"PAYLOAD": orjson.dumps(forged).decode()})
    assert (await post(client, body=body)).status_code == 200
    (record,) = await records_of(kafka, gateway, fields["MESSAGE-ID"])
    assert record.json()["data"]["learner"]["id"] == "7777777"


def signed_now(fields: dict[str, str]) -> dict[str, str]:
    """A fixture's delivery signed at the current time (the golden files sign one long ago, which
    the gateway's default timestamp window refuses)."""
    unsigned = {k: v for k, v in fields.items() if k != "AUTHORIZATION"}
    return {**unsigned, "AUTHORIZATION": sign(unsigned)}


async def test_every_fixture_over_http_gives_its_golden_outcome(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    markers: dict[str, Path] = {}
    for path in DELIVERIES:
        marker = f"fixture-{uuid.uuid4().hex}"
        markers[marker] = path
        response = await post(client, signed_now(fixture_fields(path)), request_id=marker)
        assert (path.name, response.status_code, response.content) == (path.name, 200, b"")
    for marker, path in markers.items():
        golden = orjson.loads((GOLDEN / path.name).read_bytes())
        for expected in golden["canonical"]:
            (record,) = await records_of(kafka, gateway, expected["data"]["vendor"]["message_id"])
            body = record.json()
            assert not CANONICAL.errors(body), (path.name, CANONICAL.errors(body))
            # The golden tenant is not the dev tenant: all else is the same.
            fields = ("type", "time", "subject", "data")
            assert {k: body[k] for k in fields} == {k: expected[k] for k in fields}, path.name
            assert body["partitionkey"] == expected["partitionkey"].replace("golden-tenant", "demo")
        for expected in golden["deadletters"]:
            letter = await dead_letter(kafka, gateway, marker)
            assert (letter["reason"], letter["errors"], letter["original"]) == (
                expected["reason"],
                expected["errors"],
                expected["original"],
            ), path.name


@pytest.fixture(scope="module")
def windowed_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that refuses AUTHORIZATION timestamps more than 5 minutes off."""
    env = {"GATEWAY_PEARSON_MAX_AGE_SECONDS": "300"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("pearson-window"), env)


async def test_the_freshness_window_is_configurable(
    windowed_gateway: Gateway, kafka: TopicReader
) -> None:
    fresh = delivery(fresh_exam_completed())
    stale = delivery(
        fresh_exam_completed(), timestamp=pearson_timestamp(datetime.now(UTC) - timedelta(hours=1))
    )
    async with httpx.AsyncClient(base_url=windowed_gateway.url, timeout=30) as http:
        assert (await post(http, fresh)).status_code == 200
        refused = await post(http, stale)
    assert refused.status_code == 401
    assert "window" in refused.json()["detail"]
    assert await records_of(kafka, windowed_gateway, fresh["MESSAGE-ID"])
    canonical = await kafka.settle(windowed_gateway.canonical_topic, quiet=0.5)
    assert stale["MESSAGE-ID"] not in message_ids(canonical)


# --- replays of a captured delivery (issue #18) ------------------------------------------------


async def test_a_re_split_delivery_is_refused_and_makes_no_second_record(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    """The MAC covers timestamp + MESSAGE-ID with no separator: moving the timestamp's last
    character into MESSAGE-ID keeps the MAC valid and names another message. Refused."""
    event = fresh_exam_completed()
    event["eventId"] = str(uuid.uuid4())
    message_id = f"cap-{uuid.uuid4().hex[:8]}"
    genuine = delivery(event, message_id=message_id)
    principal, stamp, mac = genuine["AUTHORIZATION"].split("|")
    assert stamp.endswith("Z")
    resplit = {
        **genuine,
        "AUTHORIZATION": f"{principal}|{stamp[:-1]}|{mac}",
        "MESSAGE-ID": "Z" + message_id,
    }
    assert (await post(client, genuine)).status_code == 200
    refused = await post(client, resplit)
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert "timestamp" in refused.json()["detail"]

    await records_of(kafka, gateway, message_id)
    canonical = await kafka.settle(gateway.canonical_topic, quiet=1.0)
    mine = [
        r.json()
        for r in canonical
        if r.json()["data"]["vendor"].get("event_id") == event["eventId"]
    ]
    assert [r["data"]["vendor"]["message_id"] for r in mine] == [message_id]


@pytest.mark.parametrize(
    "signed_at",
    [timedelta(days=-4), timedelta(days=-30), timedelta(hours=3), timedelta(days=1)],
    ids=["4-days-old", "30-days-old", "3-hours-ahead", "1-day-ahead"],
)
async def test_a_timestamp_outside_the_default_window_gets_401(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, signed_at: timedelta
) -> None:
    fields = delivery(
        fresh_exam_completed(), timestamp=pearson_timestamp(datetime.now(UTC) + signed_at)
    )
    response = await post(client, fields)
    assert response.status_code == 401
    assert "window" in response.json()["detail"]
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    assert fields["MESSAGE-ID"] not in message_ids(canonical)


async def test_an_unknown_principal_is_answered_as_a_wrong_signature(
    client: httpx.AsyncClient,
) -> None:
    unknown = await post(client, delivery(fresh_exam_completed(), principal="guessed-principal"))
    wrong = await post(client, delivery(fresh_exam_completed(), secret="another-16-bytes"))
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
