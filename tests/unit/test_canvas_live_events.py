"""Canvas Live Events beyond their golden files (tests/unit/test_golden.py runs every published
example through the Live Events route): a signed example and the same event unsigned give the
same records, both formats and every mapped type are among the examples, the identity rule, and
where each format keeps its root account."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.pipeline import normalize_items, split_request
from gateway.vendors.base import Inbound
from gateway.vendors.canvas import LIVE_EVENTS
from gateway.vendors.canvas.live_events import root_account
from tests.support.canvas import examples, new_key, sign
from tests.support.schemas import SCHEMAS

CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="canvas",
    received_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
    delivery_id="golden-request",
)
KEY = new_key()
EXAMPLES = examples()


def records(body: bytes, media_type: str = "application/jwt") -> list[dict[str, Any]]:
    """The canonical records of one Live Events request body; no event may be rejected."""
    items = split_request(LIVE_EVENTS, Inbound("POST", media_type, body), SCHEMAS)
    normalized = normalize_items(LIVE_EVENTS, items, CTX, SCHEMAS, include_original=False)
    assert normalized.rejected == []
    return normalized.canonical


def test_both_formats_and_every_mapped_type_are_among_the_examples() -> None:
    names = {name.rsplit("-", 1)[0] for name, _ in EXAMPLES}
    assert {"canvas-quiz_submitted", "canvas-grade_change", "canvas-logged_in"} <= names
    assert {"canvas-submission_created", "canvas-submission_updated"} <= names
    assert {"caliper-quiz_submitted", "caliper-grade_change"} <= names


@pytest.mark.parametrize(("name", "payload"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_a_published_example_signed_gives_the_records_of_the_same_event_unsigned(
    name: str, payload: dict[str, Any]
) -> None:
    signed = records(sign(payload, KEY, "k1").encode())
    # Signed, or plain JSON (an unsigned subscription), whatever the content type: one record.
    assert signed == records(orjson.dumps(payload), "application/json")
    assert signed == records(orjson.dumps(payload), "text/plain")
    assert len(signed) == 1


def test_the_identity_is_the_request_id_event_name_and_time() -> None:
    canvas = next(p for n, p in EXAMPLES if n.startswith("canvas-grade_change"))
    first = records(orjson.dumps(canvas))[0]
    again = records(orjson.dumps(canvas))[0]
    assert first["id"] == again["id"]  # a redelivery is the same record
    other = {**canvas, "metadata": {**canvas["metadata"], "event_time": "2019-11-01T19:11:06Z"}}
    assert records(orjson.dumps(other))[0]["id"] != first["id"]


def test_the_root_account_is_read_where_each_format_keeps_it() -> None:
    accounts = {name: root_account(payload) for name, payload in EXAMPLES}
    assert accounts["canvas-quiz_submitted-0"] == "01314161-1afc-0f2f-ffbf-1f31f5f0f972"
    assert accounts["caliper-quiz_submitted-0"] == "01314161-1afc-0f2f-ffbf-1f31f5f0f972"
    # Canvas's published Caliper grade_change names no root account: no tenant can be proven.
    assert accounts["caliper-grade_change-0"] is None
