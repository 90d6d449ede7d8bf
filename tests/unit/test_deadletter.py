"""Dead letters within Kafka's record limit: measured on the encoded JSON (escaping can make a
letter six times its body), shrunk only as far as needed, and always still a valid dead letter
whose prefix, size and digest say exactly what was cut."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.deadletter import PREFIX_MAX_BYTES, DeadLetter, encode
from gateway.kafka.records import RECORD_FRAMING_BYTES, OutRecord
from tests.support.schemas import SCHEMAS

DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")


def body_letter(body: bytes, **extra: Any) -> dict[str, Any]:
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode(), "base64"
    return {
        "id": "5c8a1e6b-6f0e-4a59-9a57-3b0f2c8e91d4",
        "reason": "malformed_payload",
        "message": "the body is not valid JSON",
        "errors": [],
        "tenant": "demo",
        "vendor": "caliper",
        "receivedat": "2026-12-04T19:13:09.000Z",
        "request_id": "r1",
        "original_body": text,
        "original_body_encoding": encoding,
        "original_media_type": "application/json",
        **extra,
    }


def event_letter(event: Any, errors: int = 0, message: str = "bad") -> dict[str, Any]:
    return {
        **{k: v for k, v in body_letter(b"").items() if not k.startswith("original")},
        "reason": "schema_violation",
        "message": message,
        "errors": [{"path": f"/x/{n}", "message": message} for n in range(errors)],
        "where": "/data/0",
        "item": {"schema": "event", "identity": "urn:x", "meta": {}},
        "original": event,
    }


def test_a_letter_that_fits_is_written_as_it_is() -> None:
    letter = event_letter({"id": "urn:x", "n": 1}, errors=3)
    assert encode(letter, 10_000) == orjson.dumps(letter)


def test_control_bytes_escape_sixfold_and_the_letter_still_fits() -> None:
    body = b"\x01" * 800_000  # 4.8 MB once escaped as \u0001
    limit = 1_000_000
    value = encode(body_letter(body), limit)
    assert len(value) <= limit
    letter = orjson.loads(value)
    assert not DEADLETTER.errors(letter)
    truncated = letter["original_truncated"]
    assert (truncated["bytes"], truncated["encoding"]) == (len(body), "utf-8")
    assert truncated["sha256"] == hashlib.sha256(body).hexdigest()
    assert body.startswith(truncated["prefix"].encode())
    assert len(truncated["prefix"]) == PREFIX_MAX_BYTES  # the room allowed the whole prefix
    assert "original_body" not in letter


def test_a_tight_limit_shrinks_the_prefix_to_what_fits() -> None:
    body = b"\x01" * 100_000
    value = encode(body_letter(body), 4_000)
    assert len(value) <= 4_000
    prefix = orjson.loads(value)["original_truncated"]["prefix"]
    assert 0 < len(prefix) < 600  # ~3,000 bytes of room, six bytes a character


def test_a_body_that_is_not_utf8_keeps_a_base64_prefix_of_its_bytes() -> None:
    body = bytes(range(256)) * 400
    value = encode(body_letter(body), 20_000)
    assert len(value) <= 20_000
    truncated = orjson.loads(value)["original_truncated"]
    assert truncated["encoding"] == "base64"
    assert body.startswith(base64.b64decode(truncated["prefix"]))
    assert truncated["sha256"] == hashlib.sha256(body).hexdigest()


def test_long_messages_are_cut_before_the_original_is() -> None:
    # A schema error may quote a value of megabytes: cutting messages keeps the event whole.
    huge_value = "v" * 200_000
    letter = event_letter({"id": "urn:x"}, errors=500, message=f"{huge_value!r} is too long")
    value = encode(letter, 100_000)
    assert len(value) <= 100_000
    shrunk = orjson.loads(value)
    assert shrunk["original"] == {"id": "urn:x"}  # replayable still
    assert shrunk["item"] == letter["item"]
    assert len(shrunk["errors"]) == 20
    assert shrunk["truncated"] == ["messages shortened", "480 more errors left out"]
    assert len(shrunk["message"]) < 1100
    assert not DEADLETTER.errors(shrunk)


def test_an_event_too_large_keeps_a_prefix_of_its_json_and_no_replay_facts() -> None:
    event = {"id": "urn:" + "i" * 50_000, "actor": "a" * 50_000}
    value = encode(event_letter(event), 30_000)
    shrunk = orjson.loads(value)
    raw = orjson.dumps(event)
    assert shrunk["original_truncated"]["bytes"] == len(raw)
    assert raw.startswith(shrunk["original_truncated"]["prefix"].encode())
    assert "original" not in shrunk
    assert "item" not in shrunk  # a truncated event cannot be replayed
    assert not DEADLETTER.errors(shrunk)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(max_size=20_000) | st.text(max_size=5_000).map(str.encode),
    limit=st.integers(min_value=2_000, max_value=60_000),
)
def test_any_body_fits_any_limit_and_says_what_it_was(body: bytes, limit: int) -> None:
    value = encode(body_letter(body), limit)
    assert len(value) <= limit
    letter = orjson.loads(value)
    assert not DEADLETTER.errors(letter)
    if "original_truncated" in letter:
        truncated = letter["original_truncated"]
        assert truncated["sha256"] == hashlib.sha256(body).hexdigest()
        prefix = truncated["prefix"]
        kept = base64.b64decode(prefix) if truncated["encoding"] == "base64" else prefix.encode()
        assert body.startswith(kept)


def test_a_refused_canonical_record_becomes_a_dead_letter_holding_it() -> None:
    record = {
        "id": "r-1",
        "tenant": "demo",
        "vendor": "pearson",
        "receivedat": "2026-12-04T19:13:09.000Z",
    }
    refused = OutRecord("edu.events.v1", b"demo|l|a", orjson.dumps(record))
    dead = DeadLetter.refused(refused, "record_invalid", "INVALID_RECORD: Broker: Invalid record")
    letter = dead.to_dict()
    assert not DEADLETTER.errors(letter)
    assert (letter["tenant"], letter["vendor"], letter["topic"]) == (
        "demo",
        "pearson",
        "edu.events.v1",
    )
    assert letter["original"] == record
    out = dead.to_record("edu.events.deadletter.v1", 1_000_000)
    assert out.key == b"demo|pearson"
    assert orjson.loads(out.value) == letter


@pytest.mark.parametrize("limit", [3_000, 50_000])
def test_to_record_leaves_room_for_the_key_headers_and_framing(limit: int) -> None:
    out = DeadLetter.from_dict(body_letter(b"\x00" * 100_000)).to_record("dlq", limit)
    assert len(out.value) <= limit - RECORD_FRAMING_BYTES
    assert out.size < limit
