"""Golden files: each Pearson delivery in, the canonical records (and dead letters) out.

Every delivery of tests/fixtures/pearson/deliveries/ is form-encoded and signed as LearningStudio
Eventing does, then run through the pure part of the pipeline (decode, split, validate,
normalize, stamp) with a fixed tenant and receive time; the result must be exactly the reviewed
output in tests/fixtures/pearson/golden/. After an intended change, regenerate with
`UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_pearson_golden.py` and review the diff.
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
from gateway.vendors.pearson import VENDOR
from tests.golden import check_golden
from tests.unit.test_pearson_auth import FORM, form, payload_text, sign

PEARSON = Path(__file__).resolve().parents[1] / "fixtures" / "pearson"
DELIVERIES = sorted((PEARSON / "deliveries").glob("*.json"))
GOLDEN = PEARSON / "golden"
SCHEMAS = SchemaSet()
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
CTX = NormalizeContext(
    tenant="golden-tenant",
    vendor="pearson",
    received_at=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
    delivery_id="golden-request",
)
SIGNED_AT = "2015-01-20T18:58:11Z"
# The fixtures that must not become canonical records, and why (the goldens pin the details).
DEAD_LETTERED = {
    "impossible-event-date.json": "unmappable",
    "invalid-json-payload.json": "schema_violation",
    "missing-message-id.json": "schema_violation",
    "non-json-payload-content-type.json": "schema_violation",
    "schema-violation-actor-without-id.json": "schema_violation",
    "unknown-message-type.json": "unmappable",
}


def fixture_fields(path: Path) -> dict[str, str]:
    """A fixture's form fields as Pearson sends them (PAYLOAD as a string) and signed."""
    fields = orjson.loads(path.read_bytes())["fields"]
    sent = {name: payload_text(v) if name == "PAYLOAD" else v for name, v in fields.items()}
    sent["AUTHORIZATION"] = sign(sent, timestamp=SIGNED_AT)
    return sent


def outcome(path: Path) -> dict[str, Any]:
    inbound = Inbound("POST", FORM, form(fixture_fields(path)))
    items = split_request(VENDOR, inbound, SCHEMAS)
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=False)
    return {
        "canonical": normalized.canonical,
        "deadletters": [
            {
                "where": item.where,
                "reason": r.code,
                "message": r.message,
                "errors": [asdict(e) for e in r.errors],
                "original": item.payload,
            }
            for item, r in normalized.rejected
        ],
    }


@pytest.mark.parametrize("path", DELIVERIES, ids=lambda p: p.name)
def test_delivery_in_canonical_records_out(path: Path) -> None:
    actual = outcome(path)
    golden = GOLDEN / path.name
    check_golden(actual, golden)
    reasons = [letter["reason"] for letter in actual["deadletters"]]
    if path.name in DEAD_LETTERED:
        assert (actual["canonical"], reasons) == ([], [DEAD_LETTERED[path.name]])
    else:
        assert (len(actual["canonical"]), reasons) == (1, [])


@pytest.mark.parametrize("path", DELIVERIES, ids=lambda p: p.name)
def test_no_credential_and_no_personal_data_leaves(path: Path) -> None:
    """The MAC never leaves (not even in a dead letter); names, emails and usernames stay out
    of canonical records (the PII policy comes later: ids only)."""
    fields = fixture_fields(path)
    text = orjson.dumps(outcome(path)).decode()
    assert fields["AUTHORIZATION"].split("|")[2] not in text
    assert "AUTHORIZATION" not in text
    canonical = orjson.dumps(outcome(path)["canonical"]).decode()
    payload = orjson.loads(path.read_bytes())["fields"]["PAYLOAD"]
    actor = payload.get("actor", {}) if isinstance(payload, dict) else {}
    for key in ("firstName", "lastName", "emailAddress", "userName"):
        if actor.get(key):
            assert actor[key] not in canonical, key


def test_every_delivery_fixture_has_its_golden_file() -> None:
    assert DELIVERIES
    assert {p.name for p in GOLDEN.glob("*.json")} == {p.name for p in DELIVERIES}
    assert set(DEAD_LETTERED) <= {p.name for p in DELIVERIES}
