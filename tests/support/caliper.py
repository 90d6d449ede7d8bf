"""Caliper as sensors send it: the fixture sets the tests share (IMS's official fixtures, LGPL-3.0,
see tests/fixtures/caliper/in/ims/SOURCE.md; our hand-written edge cases, each as an envelope;
the payloads real emitters published, tests/fixtures/caliper/in/emitters/SOURCES.md, as sent),
fresh events and envelopes for the end-to-end tests, and `golden_requests`, how the golden driver
(tests/support/golden.py) posts each fixture: wrapped in an envelope when it is a bare event or
entity, one request per example of a documentation page.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.canonical import content_digest, record_id
from gateway.vendors.base import Inbound
from tests.support.gateway import TOKEN
from tests.support.golden import FIXTURES, JSON, GoldenRequest, Outcome

CALIPER = FIXTURES / "caliper"
IMS = CALIPER / "in" / "ims"
EDGE = CALIPER / "in" / "edge"
GOLDEN = CALIPER / "golden"
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


# --- payloads real Caliper emitters published (tests/fixtures/caliper/in/emitters/SOURCES.md) ---

EMITTERS = CALIPER / "in" / "emitters"
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
        return GOLDEN / "emitters" / name


def emitter_requests() -> list[EmitterRequest]:
    """Every Caliper payload of the emitters corpus, as its sender posts it."""
    return [sent for path in sorted(EMITTERS.rglob("*.json")) for sent in emitter_requests_of(path)]


def emitter_requests_of(path: Path) -> list[EmitterRequest]:
    """The requests of one file of the emitters corpus, as its sender posts them."""
    requests: list[EmitterRequest] = []
    folder = path.relative_to(EMITTERS).parts[0]
    if folder != "canvas-quiz-page":  # not Caliper: it posts to Canvas's own endpoint
        label = path.relative_to(EMITTERS).as_posix()
        requests.extend(_emitter_requests(path, folder, label))
    return requests


def _emitter_requests(path: Path, folder: str, label: str) -> list[EmitterRequest]:
    doc = orjson.loads(path.read_bytes())
    if isinstance(doc, dict) and isinstance(doc.get("examples"), list):
        # A Canvas Live Events documentation page: each example's payload is one request.
        return [
            EmitterRequest(f"{label}#{n}", example["payload"], orjson.dumps(example["payload"]))
            for n, example in enumerate(doc["examples"], start=1)
        ]
    if isinstance(doc, dict) and "dataVersion" in doc:
        return [EmitterRequest(label, doc, path.read_bytes())]
    sensor, version = BARE_EVENT_SENDERS[folder]
    head = {"sensor": sensor, "sendTime": SEND_TIME, "dataVersion": version}
    envelope = {**head, "data": [doc]}
    return [EmitterRequest(label, envelope, orjson.dumps(envelope))]


def golden_requests(path: Path, relative: Path) -> list[GoldenRequest]:
    """The golden driver's requests for one Caliper fixture: the edge cases and IMS's positive
    fixtures (1.1, 1.2) as envelopes, every emitter payload as sent. IMS's 1.0 and negative
    fixtures, the endpoint configuration and the quiz page's posts are no golden cases."""
    if path.suffix != ".json":
        return []
    if relative.parts[0] == "emitters":
        return [
            GoldenRequest(
                sent.golden.relative_to(GOLDEN),
                Inbound("POST", JSON, sent.body),
                expect=_every_item_published(len(sent.envelope["data"])),
            )
            for sent in emitter_requests_of(path)
        ]
    if path not in edge_fixtures() + positive_fixtures():
        return []
    body, _ = as_envelope(path)
    return [GoldenRequest(relative, Inbound("POST", JSON, orjson.dumps(body)), expect=_valid)]


def _valid(outcome: Outcome) -> None:
    assert not outcome["deadletters"], "every item of these fixtures is valid"


def _every_item_published(count: int) -> Callable[[Outcome], None]:
    def expect(outcome: Outcome) -> None:
        assert not outcome["deadletters"], outcome["deadletters"]
        assert len(outcome["canonical"]) == count

    return expect


def quiz_page_deliveries() -> list[dict[str, Any]]:
    """The request bodies Canvas's quiz page posts (canvas-quiz-page/, SOURCES.md)."""
    deliveries: list[dict[str, Any]] = orjson.loads(
        (EMITTERS / "canvas-quiz-page" / "quiz-page-deliveries.json").read_bytes()
    )
    return deliveries


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def envelope(*events: Any, version: str = V1P2) -> dict[str, Any]:
    return {
        "sensor": "https://example.edu/sensors/1",
        "sendTime": "2026-11-26T10:00:01.000Z",
        "dataVersion": version,
        "data": list(events),
    }


def assessment_started(event_id: str | None = None, learner: str = "554433") -> dict[str, Any]:
    """A fresh AssessmentEvent (unique id unless given)."""
    return {
        "@context": V1P2,
        "id": event_id or f"urn:uuid:{uuid.uuid4()}",
        "type": "AssessmentEvent",
        "profile": "AssessmentProfile",
        "actor": {"id": f"https://example.edu/users/{learner}", "type": "Person"},
        "action": "Started",
        "object": {
            "id": "https://example.edu/terms/201601/courses/7/sections/1/assess/1",
            "type": "Assessment",
            "name": "Quiz One",
            "maxScore": 25.0,
        },
        "generated": {
            "id": f"https://example.edu/assess/1/users/{learner}/attempts/1",
            "type": "Attempt",
            "assignee": f"https://example.edu/users/{learner}",
            "assignable": "https://example.edu/terms/201601/courses/7/sections/1/assess/1",
            "count": 1,
            "startedAtTime": "2026-11-26T10:00:00+01:00",
        },
        "eventTime": "2026-11-26T10:00:00+01:00",
        "group": {
            "id": "https://example.edu/terms/201601/courses/7/sections/1",
            "type": "CourseSection",
        },
    }


def expected_id(event: dict[str, Any], tenant: str = "demo") -> str:
    return record_id(tenant, "caliper", event["id"], content_digest(event))
