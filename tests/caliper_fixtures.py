"""The Caliper fixture sets the tests share: IMS's official fixtures (LGPL-3.0, see
tests/fixtures/caliper/ims/SOURCE.md), our hand-written edge cases, each as an envelope, and the
payloads real emitters published (tests/fixtures/caliper/emitters/SOURCES.md), as sent.
"""

from __future__ import annotations

from dataclasses import dataclass
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
    """Our envelopes for the real-payload edge cases of docs/vendors/caliper.md#contract."""
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


# --- payloads real Caliper emitters published (tests/fixtures/caliper/emitters/SOURCES.md) -------

EMITTERS = CALIPER / "emitters"
V1P1 = "http://purl.imsglobal.org/ctx/caliper/v1p1"
V1P2 = "http://purl.imsglobal.org/ctx/caliper/v1p2"
# Bare events are posted in an Envelope, as each emitter's sensor sends them (SOURCES.md): its
# sensor id and Caliper version; the send time is fixed so that golden files stay identical.
SEND_TIME = "2026-01-01T11:59:59.000Z"
BARE_EVENT_SENDERS: dict[str, tuple[str, str]] = {
    # Learn's Caliper stream: the site id as sensor (as in Blackboard's own envelopes), 1.1.
    "blackboard-learn": ("54b54b42-dd02-42f8-88ed-07bd719bfb7c", V1P1),
    # event-routing-backends' CaliperEnvelopeProcessor: the LMS as sensor, Caliper 1.2.
    "openedx-event-routing-backends": ("http://localhost:18000", V1P2),
    # HMH's caliper-java 1.1 Sensor, with the sensor id of HMH's own envelope fixtures.
    "hmh": ("https://www.hmhco.com/AggPA", V1P1),
}


@dataclass(frozen=True)
class EmitterRequest:
    """One Caliper request a real emitter sends: its envelope and where its golden file is."""

    label: str  # emitter folder / file (#n for the n-th example of a documentation page)
    envelope: dict[str, Any]
    body: bytes  # what is posted: the file's own bytes when the file is the envelope

    @property
    def golden(self) -> Path:
        name = self.label
        if "#" in name:  # the n-th example of a documentation page
            name = name.replace(".json#", "-example-") + ".json"
        return CALIPER / "golden" / "emitters" / name


def emitter_requests() -> list[EmitterRequest]:
    """Every Caliper payload of the emitters corpus, as its sender posts it."""
    requests: list[EmitterRequest] = []
    for path in sorted(EMITTERS.rglob("*.json")):
        folder = path.relative_to(EMITTERS).parts[0]
        if folder == "canvas-quiz-page":
            continue  # not Caliper: Canvas's quiz page posts to Canvas's own endpoint
        label = path.relative_to(EMITTERS).as_posix()
        doc = orjson.loads(path.read_bytes())
        if isinstance(doc, dict) and isinstance(doc.get("examples"), list):
            # A Canvas Live Events documentation page: each example's payload is one request.
            for n, example in enumerate(doc["examples"], start=1):
                payload = example["payload"]
                requests.append(EmitterRequest(f"{label}#{n}", payload, orjson.dumps(payload)))
        elif isinstance(doc, dict) and "dataVersion" in doc:
            requests.append(EmitterRequest(label, doc, path.read_bytes()))
        else:
            sensor, version = BARE_EVENT_SENDERS[folder]
            head = {"sensor": sensor, "sendTime": SEND_TIME, "dataVersion": version}
            envelope = {**head, "data": [doc]}
            requests.append(EmitterRequest(label, envelope, orjson.dumps(envelope)))
    return requests


def quiz_page_deliveries() -> list[dict[str, Any]]:
    """The request bodies Canvas's quiz page posts (canvas-quiz-page/, SOURCES.md)."""
    deliveries: list[dict[str, Any]] = orjson.loads(
        (EMITTERS / "canvas-quiz-page" / "quiz-page-deliveries.json").read_bytes()
    )
    return deliveries
