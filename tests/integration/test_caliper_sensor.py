"""IMS's reference Caliper sensor against a running gateway, as a new user would use it.

caliper-python 1.2 (vendored unchanged in tests/vendor/caliper-python/, LGPL-3.0, see its
PROVENANCE.md) sends the same events and entity descriptions twice: with
`optimize_serialization=True` (unset properties left out, `@context` only where it changes) and
with `optimize_serialization=False` (every unset optional property serialized as `null`,
`@context` repeated on every nested entity). Both times the sensor is told success and every
event and entity lands on the canonical topic, none in the dead-letter topic; the records of the
two serializations are the same but for their ids (which digest the event as sent) and carry no
`null`.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest

from tests.support.gateway import TOKEN, Gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

VENDORED: Final = Path(__file__).resolve().parents[1] / "vendor" / "caliper-python"
CANONICAL: Final = SCHEMAS.get("canonical/event.schema.json")
T0: Final = "2026-03-01T10:00:00.000Z"
T1: Final = "2026-03-01T10:20:30.000Z"
T2: Final = "2026-03-01T10:31:00.000Z"


@pytest.fixture(scope="module")
def caliper() -> Iterator[ModuleType]:
    """The vendored sensor package (not on PyPI), imported from its folder."""
    sys.path.insert(0, str(VENDORED))
    try:
        module = importlib.import_module("caliper")
        assert module.__version__ == "1.2.0.4"
        yield module
    finally:
        sys.path.remove(str(VENDORED))


def caliper_objects(caliper: ModuleType, run: str) -> tuple[list[Any], list[Any]]:
    """An assessment taken, answered, submitted and graded, plus the usual surroundings (login,
    view, navigation), and two entity descriptions; every id unique to `run`."""
    entities = importlib.import_module("caliper.entities")
    events = importlib.import_module("caliper.events")
    base = f"https://example.edu/{run}"
    learner = entities.Person(id=f"{base}/users/554433")
    app = entities.SoftwareApplication(id=f"{base}/lms", version="v2")
    grader = entities.SoftwareApplication(id=f"{base}/autograder")
    section = entities.CourseSection(
        id=f"{base}/terms/201801/courses/7/sections/1",
        courseNumber="CPS 435-01",
        academicSession="Fall 2018",
    )
    membership = entities.Membership(
        id=f"{base}/terms/201801/courses/7/sections/1/rosters/1",
        member=learner,
        organization=section,
        roles=["Learner"],
        status="Active",
    )
    session = entities.Session(id=f"{base}/sessions/1", startedAtTime=T0)
    assessment = entities.Assessment(id=f"{base}/assess/1", name="Quiz One", maxScore=15.0)
    item = entities.AssessmentItem(id=f"{base}/assess/1/items/3", isPartOf=assessment)
    attempt = entities.Attempt(
        id=f"{base}/assess/1/users/554433/attempts/1",
        assignee=learner,
        assignable=assessment,
        count=1,
        startedAtTime=T0,
    )
    item_attempt = entities.Attempt(
        id=f"{base}/assess/1/items/3/users/554433/attempts/1",
        assignee=learner,
        assignable=item,
        isPartOf=attempt,
        count=1,
        startedAtTime=T1,
    )
    response = entities.MultipleChoiceResponse(
        id=f"{base}/assess/1/items/3/users/554433/responses/1",
        attempt=item_attempt,
        value="C",
        startedAtTime=T1,
        endedAtTime=T1,
    )
    submitted = entities.Attempt(
        id=attempt.id,
        assignee=learner,
        assignable=assessment,
        count=1,
        startedAtTime=T0,
        endedAtTime=T2,
        duration="PT31M",
    )
    score = entities.Score(
        id=f"{base}/assess/1/users/554433/attempts/1/scores/1",
        attempt=submitted,
        maxScore=15.0,
        scoreGiven=10.0,
        scoredBy=grader,
        comment="auto-graded exam",
    )
    context = {"edApp": app, "group": section, "membership": membership, "session": session}
    sent = [
        events.SessionEvent(
            actor=learner, action="LoggedIn", object=app, eventTime=T0, edApp=app, session=session
        ),
        events.ViewEvent(
            actor=learner,
            action="Viewed",
            object=entities.Document(id=f"{base}/etexts/201.epub", name="Syllabus"),
            eventTime=T0,
            **context,
        ),
        events.AssessmentEvent(
            actor=learner,
            action="Started",
            object=assessment,
            generated=attempt,
            eventTime=T0,
            **context,
        ),
        events.AssessmentItemEvent(
            actor=learner,
            action="Started",
            object=item,
            generated=item_attempt,
            eventTime=T1,
            **context,
        ),
        events.AssessmentItemEvent(
            actor=learner,
            action="Completed",
            object=item,
            generated=response,
            eventTime=T1,
            **context,
        ),
        events.AssessmentEvent(
            actor=learner,
            action="Submitted",
            object=assessment,
            generated=submitted,
            eventTime=T2,
            **context,
        ),
        events.GradeEvent(
            actor=grader,
            action="Graded",
            object=submitted,
            generated=score,
            eventTime=T2,
            edApp=app,
            group=section,
        ),
    ]
    return sent, [learner, section]


def send(caliper: ModuleType, gateway: Gateway, optimize: bool, objects: Any) -> Any:
    """Send with a sensor configured as caliper-python's README shows: host, key, scheme."""
    options = caliper.HttpOptions(
        host=f"{gateway.url}/v1/caliper",
        api_key=TOKEN,
        auth_scheme="Bearer",
        optimize_serialization=optimize,
    )
    sensor = caliper.Sensor.fashion_sensor_with_config(
        config_options=options, sensor_id="https://example.edu/sensors/caliper-python"
    )
    events, described = objects
    sensor.send(events=events)
    sensor.describe(entities=described)
    return sensor


def nulls_in(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(nulls_in(v) for v in value.values())
    if isinstance(value, list):
        return any(nulls_in(v) for v in value)
    return False


async def test_ims_sensor_events_land_in_both_serialization_modes(
    caliper: ModuleType, gateway: Gateway, kafka: TopicReader
) -> None:
    objects = caliper_objects(caliper, uuid.uuid4().hex)
    events, described = objects
    sent_ids = {e.id for e in events} | {e.id for e in described}
    for optimize in (True, False):
        sensor = await asyncio.to_thread(send, caliper, gateway, optimize, objects)
        (stats,) = sensor.statistics
        # The sensor counts an object successful when the endpoint answered 200 or 201.
        assert stats.successful.count == len(events) + len(described), str(stats)
        assert stats.failed.count == 0, str(stats)

    def ours(records: list[KafkaRecord]) -> list[dict[str, Any]]:
        # Other tests share the topic; records of other vendors may have no event_id.
        values = [r.json() for r in records]
        return [v for v in values if v["data"]["vendor"].get("event_id") in sent_ids]

    records = await kafka.read(
        gateway.canonical_topic, lambda rs: len(ours(rs)) >= 2 * len(sent_ids), within=30
    )
    by_event: dict[str, list[dict[str, Any]]] = {}
    for record in ours(records):
        by_event.setdefault(record["data"]["vendor"]["event_id"], []).append(record)
    assert set(by_event) == sent_ids
    for event_id, pair in by_event.items():
        assert len(pair) == 2, f"{event_id}: one record per serialization, got {len(pair)}"
        optimized, unoptimized = pair
        assert optimized["id"] != unoptimized["id"]  # two serializations, two digests
        # An entity description's time is its envelope's sendTime: one per send.
        same = ["type", "subject", "partitionkey", "data"]
        if optimized["type"] != "edu.entity.described":
            same.append("time")
        for field in same:
            assert optimized.get(field) == unoptimized.get(field), (event_id, field)
        for record in pair:
            assert not CANONICAL.errors(record), CANONICAL.errors(record)
            assert not nulls_in(record), f"{event_id}: a null reached the record"
    graded = next(r for r in ours(records) if r["type"] == "edu.assessment.attempt.graded")
    assert graded["data"]["score"]["given"] == 10.0
    assert graded["data"]["learner"]["id"].endswith("/users/554433")

    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    lettered = [
        d.json()["original"]["id"]
        for d in dead
        if isinstance(d.json().get("original"), dict) and d.json()["original"].get("id") in sent_ids
    ]
    assert not lettered, f"dead-lettered: {lettered}"
