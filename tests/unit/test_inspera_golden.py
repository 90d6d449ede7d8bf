"""Golden files: each Inspera webhook and export file in, the canonical records (and dead
letters) out.

Webhooks run through the pure part of the pipeline (decode, split, validate, normalize, stamp);
export files through the streaming parser (fed in small chunks, as a download arrives),
`export_items` and the same pure steps. A fixed tenant and receive time make the output exact;
it must equal the reviewed files in tests/fixtures/inspera/golden/. After an intended change,
regenerate with `UPDATE_GOLDEN=1` and review the diff.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.pipeline import Normalized, normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.vendors.base import Inbound, Item
from gateway.vendors.inspera import VENDOR
from gateway.vendors.inspera.normalize import ExportParser, download_url, export_items
from gateway.vendors.inspera.settings import InsperaSettings
from tests.golden import check_golden

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "inspera"
GOLDEN = FIXTURES / "golden"
SCHEMAS = SchemaSet()
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
EXPORT_FILE = SCHEMAS.get("inspera/inspera.schema.json#/$defs/exportFile")
CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="inspera",
    received_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
    delivery_id="golden-request",
)
TEST_ID = "35199862"
SECRET = "FIXTURE-SECRET"  # every pre-signed URL of the fixtures carries it


def webhook_items(path: Path) -> list[Item]:
    inbound = Inbound("POST", "application/json", path.read_bytes())
    return list(split_request(VENDOR, inbound, SCHEMAS))


def export_file_items(path: Path, chunk: int = 7) -> list[Item]:
    """The items of an export file, parsed as a stream of `chunk`-byte pieces."""
    data = path.read_bytes()
    parser = ExportParser()
    candidates: list[Any] = []
    for start in range(0, len(data), chunk):
        candidates.extend(parser.feed(data[start : start + chunk]))
    candidates.extend(parser.close())
    items: list[Item] = []
    for index, candidate in enumerate(candidates):
        items.extend(export_items(TEST_ID, candidate, index, parser.created))
    return items


def outcome(items: list[Item], normalized: Normalized) -> dict[str, Any]:
    keys = InsperaSettings().url_keys
    return {
        "download_url_found": [download_url(item, keys) is not None for item in items],
        "canonical": normalized.canonical,
        "deadletters": [
            {"where": item.where, "reason": r.code, "errors": [asdict(e) for e in r.errors]}
            for item, r in normalized.rejected
        ],
    }


WEBHOOKS = sorted((FIXTURES / "webhooks").glob("*.json"))
EXPORTS = sorted((FIXTURES / "exports").glob("*.json"))


@pytest.mark.parametrize("path", WEBHOOKS, ids=lambda p: p.name)
def test_webhook_in_canonical_records_out(path: Path) -> None:
    items = webhook_items(path)
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=False)
    check_golden(outcome(items, normalized), GOLDEN / "webhooks" / path.name)


@pytest.mark.parametrize("path", EXPORTS, ids=lambda p: p.name)
def test_export_file_in_canonical_records_out(path: Path) -> None:
    items = export_file_items(path)
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=False)
    check_golden(outcome(items, normalized), GOLDEN / "exports" / path.name)


@pytest.mark.parametrize("path", WEBHOOKS + EXPORTS, ids=lambda p: p.name)
def test_no_presigned_url_reaches_a_record_or_dead_letter(path: Path) -> None:
    assert SECRET in path.read_text() or "FIXTURE" not in path.read_text()
    items = webhook_items(path) if path.parent.name == "webhooks" else export_file_items(path)
    # With `original` on too: what a record or a dead letter could carry is the item's payload.
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=True)
    published = orjson.dumps([normalized.canonical, [item.payload for item in items]])
    assert SECRET.encode() not in published


def test_the_export_fixture_is_a_valid_export_file() -> None:
    document = orjson.loads((FIXTURES / "exports" / "test-events-export.json").read_bytes())
    assert not EXPORT_FILE.errors(document)


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_the_parser_gives_the_same_items_whatever_the_chunking(chunk: int) -> None:
    path = FIXTURES / "exports" / "edge-cases.json"
    assert export_file_items(path, chunk) == export_file_items(path, 7)
