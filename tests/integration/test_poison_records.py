"""Poison records: one record Kafka will never take must not stop delivery for anyone.

A body whose dead letter would be larger than the cluster's records, an event whose canonical
record would be, a record a broker refuses for good (invalid by the broker's own schema), and a
spool an earlier version jammed with such a record: each ends as a dead letter within the limit
(or, at worst, in the quarantine file), never in the spool, and the events after it reach Kafka
at once. Real broker, real gateway processes, real HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from gateway.kafka.broker import start_broker, stop_broker
from gateway.kafka.records import OutRecord
from gateway.kafka.spool import Spool
from tests.support.caliper import assessment_started, envelope, expected_id
from tests.support.gateway import (
    ROOT,
    TOKEN,
    Gateway,
    gateway_command,
    running_gateway,
    start_gateway,
    stop_gateway,
)
from tests.support.http import free_port
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")


async def post(gateway: Gateway, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        return await client.post("/v1/caliper", content=body, headers=AUTH)


async def readiness(gateway: Gateway) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.admin_url, timeout=5) as client:
        answer: dict[str, Any] = (await client.get("/readyz")).json()
        return answer


async def next_event_flows(gateway: Gateway, kafka: TopicReader) -> None:
    """A valid event sent after the poison is acknowledged by Kafka itself (not spooled) and is
    in the canonical topic."""
    event = assessment_started()
    answer = await post(gateway, orjson.dumps(envelope(event)))
    assert answer.status_code == 200, answer.text
    wanted = expected_id(event)
    records = await kafka.read(
        gateway.canonical_topic, lambda rs: wanted in {r.json()["id"] for r in rs}
    )
    assert wanted in {r.json()["id"] for r in records}
    lines = [line for line in gateway.log_lines() if line.get("event") == "request"]
    assert (lines[-1]["spooled"], lines[-1]["accepted"]) == (0, 1), lines[-1]
    assert await readiness(gateway) == {"status": "ready", "spool_depth": 0}


def env_of(gateway: Gateway, bootstrap: str = "") -> dict[str, str]:
    """The environment `gateway` commands need to work on what `gateway` serves."""
    return {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap or gateway_broker(gateway),
        "GATEWAY_KAFKA_CANONICAL_TOPIC": gateway.canonical_topic,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": gateway.deadletter_topic,
        "GATEWAY_SERVER_STATE_DIR": str(gateway.log_path.parent / f"state-{gateway.suffix}"),
    }


def gateway_broker(gateway: Gateway) -> str:
    connected = next(e for e in gateway.log_lines() if e.get("event") == "broker_connected")
    return str(connected["kafka"])


def no_outage_was_logged(gateway: Gateway, *, spooled_before: bool = False) -> None:
    events = {line.get("event") for line in gateway.log_lines()}
    outage = {"broker_lost", "kafka_refused"} | (set() if spooled_before else {"spool_engaged"})
    assert not events & outage, events


async def drained(gateway: Gateway) -> None:
    """Wait until the gateway's spool is empty and it says it is ready."""
    for _ in range(100):
        if await readiness(gateway) == {"status": "ready", "spool_depth": 0}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {await readiness(gateway)}")


async def dead_letters(kafka: TopicReader, gateway: Gateway, count: int) -> list[KafkaRecord]:
    letters = await kafka.read(gateway.deadletter_topic, lambda rs: len(rs) >= count)
    assert len(letters) >= count
    for letter in letters:
        assert not DEADLETTER.errors(letter.json()), letter.json()
    return letters


@pytest.fixture
def poison_gateway(broker: str, tmp_path: Path) -> Iterator[Gateway]:
    yield from running_gateway(broker, tmp_path)


async def test_a_body_whose_dead_letter_would_be_too_large_is_kept_as_a_bounded_prefix(
    poison_gateway: Gateway, kafka: TopicReader
) -> None:
    # 800,000 control bytes: JSON-escaped, the dead letter of this body would be 4.8 MB, more
    # than the producer may send (it was spooled, then retried for ever, blocking everyone).
    body = b"\x01" * 800_000
    answer = await post(poison_gateway, body)
    assert answer.status_code == 400
    assert answer.json()["type"] == "urn:assessment-gateway:error:malformed_payload"

    [record] = await dead_letters(kafka, poison_gateway, 1)
    letter = record.json()
    assert len(record.value) < 4 * 1024 * 1024
    assert "original_body" not in letter
    assert letter["original_truncated"]["bytes"] == len(body)
    assert letter["original_truncated"]["sha256"] == hashlib.sha256(body).hexdigest()
    prefix = letter["original_truncated"]["prefix"]
    assert prefix
    assert body.startswith(prefix.encode())
    assert "original cut to a prefix" in letter["truncated"]
    await next_event_flows(poison_gateway, kafka)
    no_outage_was_logged(poison_gateway)

    # `gateway tail` leaves the original out unless asked: its prefix too, not its size.
    shown = orjson.loads(
        await gateway_command(env_of(poison_gateway), "tail", "--topic", "deadletter")
    )
    assert shown["original_truncated"] == {
        k: v for k, v in letter["original_truncated"].items() if k != "prefix"
    }


async def test_an_event_whose_canonical_record_would_be_too_large_is_dead_lettered(
    poison_gateway: Gateway, kafka: TopicReader
) -> None:
    # 2.6 MB: actor and object ids of 1.3 MB each, copied into learner, assessment, partition key
    # and subject they make a 5 MB canonical record, over the 4 MiB + 64 KiB the topics take.
    event = assessment_started()
    event["actor"]["id"] = "https://example.edu/users/" + "a" * 1_300_000
    event["object"]["id"] = "https://example.edu/assess/" + "o" * 1_300_000
    answer = await post(poison_gateway, orjson.dumps(envelope(event)))
    assert answer.status_code == 200  # one event that cannot be a record is dead-lettered

    [record] = await dead_letters(kafka, poison_gateway, 1)
    letter = record.json()
    assert letter["reason"] == "record_too_large"
    assert (letter["original"], letter["where"]) == (event, "/data/0")  # whole: replayable
    assert "would be" in letter["message"]
    await next_event_flows(poison_gateway, kafka)
    no_outage_was_logged(poison_gateway)


async def create_topics(bootstrap: str, names: list[str], max_message_bytes: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        config = {"max.message.bytes": str(max_message_bytes)}
        await admin.create_topics([NewTopic(n, 3, 1, topic_configs=config) for n in names])
    finally:
        await admin.close()


async def test_the_limit_of_topics_an_operator_created_is_read_and_kept(
    broker: str, kafka: TopicReader, tmp_path: Path
) -> None:
    # Topics made by an operator with a small limit (a real cluster's default is 1 MB): the
    # gateway reads it at start-up and never produces a record over it.
    suffix = uuid.uuid4().hex[:8]
    limit = 20_000
    await create_topics(
        broker, [f"edu.events.v1.{suffix}", f"edu.events.deadletter.v1.{suffix}"], limit
    )
    gateway = start_gateway(broker, tmp_path, suffix=suffix)
    try:
        connected = [e for e in gateway.log_lines() if e.get("event") == "broker_connected"]
        assert connected[0]["max_record_bytes"] == limit

        event = assessment_started()
        event["extensions"] = {"essay": "words " * 5_000}  # 30 KB
        answer = await post(gateway, orjson.dumps(envelope(event)))
        assert answer.status_code == 200
        [record] = await dead_letters(kafka, gateway, 1)
        assert len(record.value) < limit
        letter = record.json()
        assert letter["reason"] == "record_too_large"
        assert letter["original_truncated"]["bytes"] == len(orjson.dumps(event))
        await next_event_flows(gateway, kafka)
        no_outage_was_logged(gateway)
    finally:
        stop_gateway(gateway)


def canonical_record(topic: str, event: dict[str, Any]) -> OutRecord:
    """A canonical record of `event` as the gateway writes it (its id is what tests look for)."""
    value = {"id": expected_id(event), "tenant": "demo", "vendor": "caliper", "type": "t"}
    return OutRecord(
        topic, b"demo||", orjson.dumps(value), (("content-type", b"application/cloudevents+json"),)
    )


async def spool_left_by_an_earlier_version(state: Path, records: list[OutRecord]) -> None:
    """Write the spool file an earlier gateway left (same format: the spool's own code)."""
    spool = Spool(state / "spool", 1024 * 1024 * 1024)
    await spool.open()
    try:
        await spool.append(records)
    finally:
        await spool.close()


async def test_a_spool_jammed_by_an_earlier_version_drains_after_the_upgrade(
    broker: str, kafka: TopicReader, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    canonical, deadletter = f"edu.events.v1.{suffix}", f"edu.events.deadletter.v1.{suffix}"
    # What the earlier version spooled: the 4.8 MB dead letter of 800,000 control bytes (no
    # producer would take it), and behind it the events of other requests.
    jam = {
        "id": str(uuid.uuid4()),
        "reason": "malformed_payload",
        "message": "the body is not valid JSON",
        "errors": [],
        "tenant": "demo",
        "vendor": "caliper",
        "receivedat": "2026-12-04T19:13:09.000Z",
        "request_id": "r1",
        "original_body": "\x01" * 800_000,
        "original_body_encoding": "utf-8",
        "original_media_type": "application/json",
    }
    jammed = OutRecord(deadletter, b"demo|caliper", orjson.dumps(jam))
    assert len(jammed.value) > 4_800_000
    behind = [assessment_started() for _ in range(3)]
    state = tmp_path / f"state-{suffix}"
    await spool_left_by_an_earlier_version(
        state, [jammed, *(canonical_record(canonical, e) for e in behind)]
    )

    gateway = start_gateway(broker, tmp_path, suffix=suffix)
    try:
        wanted = {expected_id(e) for e in behind}
        records = await kafka.read(canonical, lambda rs: wanted <= {r.json()["id"] for r in rs})
        assert wanted <= {r.json()["id"] for r in records}
        [letter] = await dead_letters(kafka, gateway, 1)
        assert letter.json()["id"] == jam["id"]  # the same letter, shrunk to fit
        assert letter.json()["original_truncated"]["bytes"] == 800_000
        await drained(gateway)
        no_outage_was_logged(gateway, spooled_before=True)
        refused = [e for e in gateway.log_lines() if e.get("event") == "record_refused"]
        assert [(e["reason"], e["outcome"]) for e in refused] == [
            ("record_too_large", "deadlettered")
        ]
        await next_event_flows(gateway, kafka)
    finally:
        stop_gateway(gateway)


# --- a broker that refuses records for good: the embedded broker with topic schemas ----------

SUBMITTED = "edu.assessment.attempt.submitted"


def refusing(field: str, value: str) -> dict[str, Any]:
    """A broker-side JSON Schema (Tansu's `<topic>.json`) refusing records whose value has
    `field` equal to `value`."""
    return {
        "type": "object",
        "properties": {
            "value": {"type": "object", "properties": {field: {"not": {"const": value}}}}
        },
    }


@pytest.fixture
def strict_broker(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A broker refusing, for good (INVALID_RECORD), records that break its topics' schemas."""
    schemas = tmp_path / "broker-schemas"
    schemas.mkdir()
    port = free_port()
    process = start_broker(port, quiet=True, schemas=schemas)
    try:
        yield f"127.0.0.1:{port}", schemas
    finally:
        stop_broker(process)


def attempt(action: str) -> dict[str, Any]:
    """An event of one learner's attempt: all share a partition key, hence a batch."""
    event = assessment_started(learner="777")
    event["action"] = action
    return event


async def test_a_record_the_broker_refuses_for_good_is_dead_lettered_and_its_batch_mates_land(
    strict_broker: tuple[str, Path], tmp_path: Path
) -> None:
    bootstrap, schemas = strict_broker
    suffix = uuid.uuid4().hex[:8]
    canonical, deadletter = f"edu.events.v1.{suffix}", f"edu.events.deadletter.v1.{suffix}"
    (schemas / f"{canonical}.json").write_text(json.dumps(refusing("type", SUBMITTED)))
    # Left in the spool by a gateway that spooled it during an outage: refused for good too.
    spooled = attempt("Paused")
    await spool_left_by_an_earlier_version(
        tmp_path / f"state-{suffix}",
        [
            OutRecord(
                canonical,
                b"demo|x|y",
                orjson.dumps(
                    {
                        "id": "spooled-refused",
                        "type": SUBMITTED,
                        "tenant": "demo",
                        "vendor": "caliper",
                    }
                ),
            ),
            canonical_record(canonical, spooled),
        ],
    )
    kafka = TopicReader(bootstrap)
    gateway = start_gateway(bootstrap, tmp_path, suffix=suffix)
    try:
        # One batch: the broker refuses all of it for the one submitted event.
        events = [attempt("Started"), attempt("Submitted"), attempt("Paused")]
        answer = await post(gateway, orjson.dumps(envelope(*events)))
        assert answer.status_code == 200, answer.text

        wanted = {expected_id(events[0]), expected_id(events[2]), expected_id(spooled)}
        records = await kafka.read(canonical, lambda rs: wanted <= {r.json()["id"] for r in rs})
        landed = {r.json()["id"] for r in records}
        assert wanted <= landed
        assert expected_id(events[1]) not in landed
        letters = await kafka.read(deadletter, lambda rs: len(rs) >= 2)
        by_original = {letter.json()["original"]["id"]: letter.json() for letter in letters}
        assert set(by_original) == {expected_id(events[1]), "spooled-refused"}
        for letter in by_original.values():
            assert letter["reason"] == "record_invalid"
            assert letter["topic"] == canonical
            assert "INVALID_RECORD" in letter["message"]
            assert not DEADLETTER.errors(letter)
        await drained(gateway)
        no_outage_was_logged(gateway, spooled_before=True)
        async with httpx.AsyncClient(base_url=gateway.admin_url) as client:
            metrics = (await client.get("/metrics")).text
        refused = [line for line in metrics.splitlines() if "records_refused_total{" in line]
        assert refused == [
            'gateway_records_refused_total{outcome="deadlettered",reason="record_invalid"} 2.0'
        ]
    finally:
        stop_gateway(gateway)


async def test_a_record_whose_dead_letter_is_refused_too_is_quarantined_and_listed(
    strict_broker: tuple[str, Path], tmp_path: Path
) -> None:
    bootstrap, schemas = strict_broker
    suffix = uuid.uuid4().hex[:8]
    canonical, deadletter = f"edu.events.v1.{suffix}", f"edu.events.deadletter.v1.{suffix}"
    (schemas / f"{canonical}.json").write_text(json.dumps(refusing("type", SUBMITTED)))
    (schemas / f"{deadletter}.json").write_text(json.dumps(refusing("reason", "record_invalid")))
    kafka = TopicReader(bootstrap)
    gateway = start_gateway(bootstrap, tmp_path, suffix=suffix)
    try:
        events = [attempt("Submitted"), attempt("Paused")]
        answer = await post(gateway, orjson.dumps(envelope(*events)))
        assert answer.status_code == 200, answer.text
        wanted = expected_id(events[1])
        records = await kafka.read(canonical, lambda rs: wanted in {r.json()["id"] for r in rs})
        assert wanted in {r.json()["id"] for r in records}

        shown = await gateway_command(env_of(gateway), "spool")
        assert re.search(r"quarantine .*: 1 records Kafka refused for good", shown), shown
        assert "1 record_invalid" in shown
        quarantined = [e for e in gateway.log_lines() if e.get("event") == "record_refused"]
        assert [e["outcome"] for e in quarantined] == ["quarantined"]
        await drained(gateway)
        no_outage_was_logged(gateway)
    finally:
        stop_gateway(gateway)
