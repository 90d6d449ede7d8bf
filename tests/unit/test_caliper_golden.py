"""Golden files: each Caliper payload in, the canonical records (and dead letters) out.

The pure part of the pipeline (decode, envelope schema, split, validate, normalize, stamp) runs
on every edge-case envelope and every IMS positive fixture, with a fixed tenant and receive time,
and must produce exactly the reviewed output in tests/fixtures/caliper/golden/. After an
intended change, regenerate with `UPDATE_GOLDEN=1 make test` and review the diff.
"""

from __future__ import annotations

import os
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
from tests.caliper_fixtures import CALIPER, as_envelope, edge_fixtures, positive_fixtures

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
    inbound = Inbound("POST", "application/json", orjson.dumps(body))
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
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n")
    assert golden.is_file(), f"no golden file {golden}: run UPDATE_GOLDEN=1 and review it"
    assert actual == orjson.loads(golden.read_bytes())
    for record in actual["canonical"]:
        assert not CANONICAL.errors(record), (record["id"], CANONICAL.errors(record))
    assert not actual["deadletters"], "every item of these fixtures is valid"
