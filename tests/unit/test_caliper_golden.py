"""Golden files: each Caliper payload in, the canonical records (and dead letters) out.

The pure part of the pipeline (decode, envelope schema, split, validate, normalize, stamp) runs
on every edge-case envelope, every IMS positive fixture and every payload of the real emitters'
corpus (tests/fixtures/caliper/emitters/), with a fixed tenant and receive time, and must produce
exactly the reviewed output in tests/fixtures/caliper/golden/. After an intended change,
regenerate with `UPDATE_GOLDEN=1 make test` and review the diff.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.pipeline import normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.vendors.base import Inbound
from gateway.vendors.caliper import VENDOR
from tests.caliper_fixtures import (
    CALIPER,
    EmitterRequest,
    as_envelope,
    edge_fixtures,
    emitter_requests,
    positive_fixtures,
)
from tests.golden import check_golden

GOLDEN = CALIPER / "golden"
SCHEMAS = SchemaSet()
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="caliper",
    received_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
    delivery_id="golden-request",
)


def outcome(path: Path) -> dict[str, Any]:
    body, _ = as_envelope(path)
    return outcome_of(orjson.dumps(body))


def outcome_of(body: bytes) -> dict[str, Any]:
    inbound = Inbound("POST", "application/json", body)
    items = split_request(VENDOR, inbound, SCHEMAS)
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=False)
    return {
        "canonical": normalized.canonical,
        "deadletters": [
            {"where": item.where, "reason": r.code, "errors": [asdict(e) for e in r.errors]}
            for item, r in normalized.rejected
        ],
    }


def golden_path(path: Path) -> Path:
    return GOLDEN / path.parent.relative_to(CALIPER).as_posix().replace("/", "-") / path.name


@pytest.mark.parametrize(
    "path",
    edge_fixtures() + positive_fixtures(),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_payload_in_canonical_records_out(path: Path) -> None:
    actual = outcome(path)
    golden = golden_path(path)
    check_golden(actual, golden)
    assert not actual["deadletters"], "every item of these fixtures is valid"


@pytest.mark.parametrize("sent", emitter_requests(), ids=lambda r: r.label)
def test_real_emitter_payload_in_canonical_records_out(sent: EmitterRequest) -> None:
    """What real emitters published (SOURCES.md) becomes canonical records, none dead-lettered."""
    actual = outcome_of(sent.body)
    check_golden(actual, sent.golden)
    assert not actual["deadletters"], actual["deadletters"]
    assert len(actual["canonical"]) == len(sent.envelope["data"])
