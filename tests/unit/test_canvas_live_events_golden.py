"""Golden files: each published Canvas Live Events example (Canvas format and Caliper) in, the
canonical records out, through the pure part of the pipeline (decode, split, validate,
normalize) with a fixed tenant and receive time. Regenerate with `UPDATE_GOLDEN=1` and review."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.pipeline import normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.vendors.base import Inbound
from gateway.vendors.canvas import LIVE_EVENTS
from gateway.vendors.canvas.live_events import root_account
from tests.canvas_live_events import GOLDEN, examples, new_key, sign
from tests.golden import check_golden

SCHEMAS = SchemaSet()
CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="canvas",
    received_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
    delivery_id="golden-request",
)
KEY = new_key()
EXAMPLES = examples()


def outcome(payload: dict[str, Any], body: bytes) -> dict[str, Any]:
    inbound = Inbound("POST", "application/jwt", body)
    items = split_request(LIVE_EVENTS, inbound, SCHEMAS)
    normalized = normalize_items(LIVE_EVENTS, items, CTX, SCHEMAS, include_original=False)
    return {
        "canonical": normalized.canonical,
        "rejected": [
            {"where": item.where, **asdict(rejection)} for item, rejection in normalized.rejected
        ],
    }


def test_both_formats_and_every_mapped_type_are_among_the_examples() -> None:
    names = {name.rsplit("-", 1)[0] for name, _ in EXAMPLES}
    assert {"canvas-quiz_submitted", "canvas-grade_change", "canvas-logged_in"} <= names
    assert {"canvas-submission_created", "canvas-submission_updated"} <= names
    assert {"caliper-quiz_submitted", "caliper-grade_change"} <= names


@pytest.mark.parametrize(("name", "payload"), EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_a_published_example_signed_becomes_its_golden_records(
    name: str, payload: dict[str, Any]
) -> None:
    signed = sign(payload, KEY, "k1").encode()
    plain = orjson.dumps(payload)
    result = outcome(payload, signed)
    # Signed or plain JSON (an unsigned subscription), the same records.
    assert outcome(payload, plain) == result
    assert result["rejected"] == []
    assert len(result["canonical"]) == 1
    record = result["canonical"][0]
    assert record["vendor"] == "canvas"
    assert record["data"]["vendor"]["name"] == "canvas"
    check_golden(result, GOLDEN / f"{name}.json")


def test_the_identity_is_the_request_id_event_name_and_time() -> None:
    canvas = next(p for n, p in EXAMPLES if n.startswith("canvas-grade_change"))
    first = outcome(canvas, orjson.dumps(canvas))["canonical"][0]
    again = outcome(canvas, orjson.dumps(canvas))["canonical"][0]
    assert first["id"] == again["id"]  # a redelivery is the same record
    other = {**canvas, "metadata": {**canvas["metadata"], "event_time": "2019-11-01T19:11:06Z"}}
    assert outcome(other, orjson.dumps(other))["canonical"][0]["id"] != first["id"]


def test_the_root_account_is_read_where_each_format_keeps_it() -> None:
    accounts = {name: root_account(payload) for name, payload in EXAMPLES}
    assert accounts["canvas-quiz_submitted-0"] == "01314161-1afc-0f2f-ffbf-1f31f5f0f972"
    assert accounts["caliper-quiz_submitted-0"] == "01314161-1afc-0f2f-ffbf-1f31f5f0f972"
    # Canvas's published Caliper grade_change names no root account: no tenant can be proven.
    assert accounts["caliper-grade_change-0"] is None
