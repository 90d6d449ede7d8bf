"""The Caliper fixture sets the tests share: IMS's official fixtures (LGPL-3.0, see
tests/fixtures/caliper/ims/SOURCE.md) and our hand-written edge cases, each as an envelope.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

CALIPER = Path(__file__).resolve().parent / "fixtures" / "caliper"
IMS = CALIPER / "ims"
EDGE = CALIPER / "edge"
NOT_AN_EVENT = {"caliperEndpointConfigPayload.json"}  # the GET configuration example
UNPARSEABLE = {"caliperEntity-BadJson.json"}  # deliberately not JSON
# Equal, as JSON data, to the valid v1p2/caliperEntityScore.json (`"maxScore": 15` vs `15.0`):
# no schema can reject it, so the gateway rightly publishes it (test_caliper_schema.py pins this).
INDISTINGUISHABLE = {"caliperEntityScore-MalformedMaxScoreNotAnInt.json"}


def positive_fixtures() -> list[Path]:
    """Every IMS v1p1 and v1p2 fixture that is an envelope, an event or an entity."""
    return [
        path
        for version in ("v1p1", "v1p2")
        for path in sorted((IMS / version).glob("*.json"))
        if path.name not in NOT_AN_EVENT
    ]


def negative_fixtures() -> list[Path]:
    """IMS's negative fixtures (each one event or entity with one defect) that JSON can tell."""
    return [
        path
        for path in sorted((IMS / "v1p2" / "commonErrorFixtures").glob("*.json"))
        if path.name not in UNPARSEABLE | INDISTINGUISHABLE
    ]


def edge_fixtures() -> list[Path]:
    """Our envelopes for the real-payload edge cases of vendor-contracts.md §1."""
    return sorted(EDGE.glob("*.json"))


def as_envelope(path: Path) -> tuple[dict[str, Any], list[Any]]:
    """The fixture as an envelope (wrapped if it is a single event or entity) and its items."""
    doc = orjson.loads(path.read_bytes())
    if "dataVersion" in doc:
        return doc, doc["data"]
    version = path.parent.name if path.parent.name.startswith("v1p") else "v1p2"
    wrapped = {
        "sensor": "https://example.edu/sensors/1",
        "sendTime": "2018-11-15T10:15:01.000Z",
        "dataVersion": f"http://purl.imsglobal.org/ctx/caliper/{version}",
        "data": [doc],
    }
    return wrapped, [doc]
