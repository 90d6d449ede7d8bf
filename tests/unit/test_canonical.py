"""The canonical record's building blocks: ids, timestamps, source, partition key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.canonical import (
    ID_NAMESPACE,
    NormalizeContext,
    format_time,
    normalize_time,
    partition_key,
    record_id,
    source_of,
)
from gateway.errors import NormalizeError


@pytest.mark.parametrize(
    "parts",
    [("demo", "caliper", "urn:uuid:1", "ab"), ("t", "v", "é ü", "0" * 64), ("", "", "", "")],
)
def test_record_id_is_rfc_4122_uuid5(parts: tuple[str, str, str, str]) -> None:
    assert record_id(*parts) == str(uuid.uuid5(ID_NAMESPACE, "\n".join(parts)))


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("2016-11-15T10:15:00.000Z", "2016-11-15T10:15:00.000Z"),
        ("2016-11-15T10:15:00Z", "2016-11-15T10:15:00.000Z"),
        ("2016-11-15T10:15:00.123456Z", "2016-11-15T10:15:00.123Z"),
        ("2016-11-15T12:15:00.5+02:00", "2016-11-15T10:15:00.500Z"),
        ("2016-11-15T10:15:00", "2016-11-15T10:15:00.000Z"),  # no offset: taken as UTC
        ("2016-11-15 10:15:00-05:00", "2016-11-15T15:15:00.000Z"),
    ],
)
def test_timestamps_normalize_to_utc_milliseconds(given: str, canonical: str) -> None:
    assert normalize_time(given) == canonical


@pytest.mark.parametrize("bad", ["2016-02-31T10:15:00.000Z", "yesterday", "", None, 1479204900])
def test_invalid_timestamps_are_refused(bad: object) -> None:
    with pytest.raises(NormalizeError):
        normalize_time(bad, "/eventTime")


def test_format_time_matches_strftime() -> None:
    moment = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=timezone(timedelta(hours=-3)))
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "890Z"
    assert format_time(moment) == expected


def test_context_derives_source_and_receive_time_once() -> None:
    ctx = NormalizeContext("uni of x", "caliper", datetime(2026, 1, 1, tzinfo=UTC))
    assert ctx.source == source_of("uni of x", "caliper") == "/tenants/uni%20of%20x/vendors/caliper"
    assert ctx.received == "2026-01-01T00:00:00.000Z"


def test_partition_key_keeps_unknown_parts_empty() -> None:
    data = {"learner": {"id": "u1"}, "assessment": {"id": "a1"}}
    assert partition_key("t", data) == "t|u1|a1"
    assert partition_key("t", {"learner": {"id": "u1"}}) == "t|u1|"
