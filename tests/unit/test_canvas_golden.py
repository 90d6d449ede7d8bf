"""Golden files: each Canvas request in, the canonical records (and dead letters) out.

Each fixture in tests/fixtures/canvas/requests/ is one POST (path ids, content type, body in the
JSON, Rack-nested form or canvasapi flat-form encoding). The pure part of the pipeline (decode,
batch schema, split, validate, normalize, stamp) runs on it with a fixed tenant, receive time and
request id, and must produce exactly the reviewed output in tests/fixtures/canvas/golden/.
After an intended change, regenerate with `UPDATE_GOLDEN=1` and review the diff.
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
from gateway.vendors.canvas import VENDOR
from tests.golden import check_golden

CANVAS = Path(__file__).resolve().parents[1] / "fixtures" / "canvas"
REQUESTS = CANVAS / "requests"
GOLDEN = CANVAS / "golden"
SCHEMAS = SchemaSet()
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="canvas",
    received_at=datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC),
    delivery_id="golden-request",
)


def request_fixtures() -> list[Path]:
    return sorted(REQUESTS.glob("*.json"))


def as_inbound(fixture: dict[str, Any]) -> Inbound:
    """The POST a fixture describes."""
    body = fixture["body"]
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    return Inbound("POST", fixture["content_type"], raw, path_params=fixture["path"])


def outcome(path: Path) -> dict[str, Any]:
    inbound = as_inbound(orjson.loads(path.read_bytes()))
    items = split_request(VENDOR, inbound, SCHEMAS)
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=False)
    return {
        "canonical": normalized.canonical,
        "deadletters": [
            {"where": item.where, "reason": r.code, "errors": [asdict(e) for e in r.errors]}
            for item, r in normalized.rejected
        ],
    }


@pytest.mark.parametrize("path", request_fixtures(), ids=lambda p: p.stem)
def test_request_in_canonical_records_out(path: Path) -> None:
    actual = outcome(path)
    golden = GOLDEN / path.name
    check_golden(actual, golden)
    expected = orjson.loads(path.read_bytes()).get("deadletters", [])
    assert [d["where"] for d in actual["deadletters"]] == expected


def test_every_request_fixture_has_a_golden_file_and_no_golden_is_orphaned() -> None:
    assert {p.name for p in request_fixtures()} == {p.name for p in GOLDEN.glob("*.json")}
