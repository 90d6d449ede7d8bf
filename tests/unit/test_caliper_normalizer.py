"""The Caliper normalizer's mapping decisions, one behaviour per test (goldens pin the rest)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext, content_digest, record_id
from gateway.pipeline import Normalized, normalize_items, split_request
from gateway.vendors.base import Inbound
from gateway.vendors.caliper import VENDOR
from gateway.vendors.caliper.normalize import snake_case, term
from tests.support.schemas import SCHEMAS

CTX = NormalizeContext("uni", "caliper", datetime(2026, 1, 1, tzinfo=UTC), "req-1")
V1P1 = "http://purl.imsglobal.org/ctx/caliper/v1p1"


def run(*items: Any) -> Normalized:
    body = {"sensor": "s", "sendTime": "2026-01-01T00:00:00Z", "dataVersion": V1P1, "data": items}
    inbound = Inbound("POST", "application/json", orjson.dumps(body))
    return normalize_items(VENDOR, split_request(VENDOR, inbound, SCHEMAS), CTX, SCHEMAS, False)


def one(item: dict[str, Any]) -> dict[str, Any]:
    normalized = run(item)
    assert not normalized.rejected, normalized.rejected
    (record,) = normalized.canonical
    return record


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "urn:uuid:0b9f4c7e-1111-4222-8333-944455556666",
        "type": "AssessmentEvent",
        "actor": "https://example.edu/users/1",
        "action": "Started",
        "object": "https://example.edu/assess/1",
        "eventTime": "2026-03-01T10:00:00Z",
    }
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("event_type", "action", "canonical"),
    [
        ("AssessmentEvent", "Started", "edu.assessment.attempt.started"),
        ("AssessmentEvent", "Paused", "edu.assessment.attempt.paused"),
        ("AssessmentEvent", "Resumed", "edu.assessment.attempt.resumed"),
        ("AssessmentEvent", "Restarted", "edu.assessment.attempt.restarted"),
        ("AssessmentEvent", "Reset", "edu.assessment.attempt.reset"),
        ("AssessmentEvent", "Submitted", "edu.assessment.attempt.submitted"),
        ("AssessmentEvent", "Completed", "edu.assessment.attempt.submitted"),  # Blackboard
        ("AssessmentItemEvent", "Started", "edu.assessment.item.started"),
        ("AssessmentItemEvent", "Skipped", "edu.assessment.item.skipped"),
        ("AssessmentItemEvent", "Completed", "edu.assessment.item.completed"),
        ("AssessmentItemEvent", "Submitted", "edu.assessment.item.completed"),  # Blackboard
        (
            "http://purl.imsglobal.org/caliper/AssessmentEvent",
            "http://purl.imsglobal.org/vocab/caliper/v1/action#Started",
            "edu.assessment.attempt.started",
        ),
        ("ViewEvent", "Viewed", "edu.activity.generic"),
        ("https://example.edu/caliper/CustomEvent", "Launched", "edu.activity.generic"),
    ],
)
def test_type_vocabulary(event_type: str, action: str, canonical: str) -> None:
    assert one(event(type=event_type, action=action))["type"] == canonical


def test_timestamps_become_utc_with_milliseconds() -> None:
    record = one(event(eventTime="2026-03-01T12:30:05+02:00"))
    assert record["time"] == "2026-03-01T10:30:05.000Z"
    assert record["receivedat"] == "2026-01-01T00:00:00.000Z"


def test_thinned_item_event_knows_its_object_is_an_item() -> None:
    record = one(event(type="AssessmentItemEvent", action="Completed"))
    assert record["data"]["item"] == {"id": "https://example.edu/assess/1"}
    assert "assessment" not in record["data"]  # unknown, not invented


def test_item_event_assessment_is_the_items_parent() -> None:
    item = {
        "id": "https://example.edu/assess/1/items/3",
        "type": "AssessmentItem",
        "isPartOf": {"id": "https://example.edu/assess/1", "type": "Assessment"},
    }
    record = one(event(type="AssessmentItemEvent", action="Started", object=item))
    assert record["data"]["assessment"]["id"] == "https://example.edu/assess/1"
    assert record["data"]["item"]["id"] == "https://example.edu/assess/1/items/3"


def test_grader_is_the_actor_and_the_assignee_the_learner() -> None:
    attempt = {
        "id": "https://example.edu/attempts/9",
        "type": "Attempt",
        "assignee": "https://example.edu/users/1",
        "assignable": "https://example.edu/assess/1",
    }
    score = {
        "id": "https://example.edu/scores/9",
        "type": "Score",
        "scoreGiven": 7.5,
        "maxScore": "10",
    }
    record = one(
        event(
            type="GradeEvent",
            action="Graded",
            actor={"id": "https://example.edu/autograder", "type": "SoftwareApplication"},
            object=attempt,
            generated=score,
        )
    )
    data = record["data"]
    assert record["type"] == "edu.assessment.attempt.graded"
    assert data["learner"] == {"id": "https://example.edu/users/1"}
    assert data["actor"]["id"] == "https://example.edu/autograder"
    assert data["score"] == {
        "id": "https://example.edu/scores/9",
        "given": 7.5,
        "max": 10,  # a number sent as a string is a number
    }
    assert data["assessment"] == {"id": "https://example.edu/assess/1"}


def test_entity_description_is_published_not_dropped() -> None:
    entity = {
        "id": "https://example.edu/users/1",
        "type": "Person",
        "dateCreated": "2026-01-02T03:04:05Z",
    }
    record = one(entity)
    assert record["type"] == "edu.entity.described"
    assert record["data"]["entity"] == {"id": "https://example.edu/users/1", "type": "Person"}
    assert record["time"] == "2026-01-02T03:04:05.000Z"


def test_id_is_deterministic_and_depends_on_content_not_key_order() -> None:
    first = event()
    reordered = dict(reversed(list(first.items())))
    assert one(first)["id"] == one(reordered)["id"]
    assert one(first)["id"] == record_id("uni", "caliper", first["id"], content_digest(first))
    changed = copy.deepcopy(first)
    changed["action"] = "Submitted"
    assert one(changed)["id"] != one(first)["id"]


def test_invalid_event_is_rejected_with_pointers_and_the_rest_kept() -> None:
    bad = event(id="urn:uuid:bad")
    del bad["eventTime"]
    normalized = run(event(), bad)
    assert len(normalized.canonical) == 1
    ((item, rejection),) = normalized.rejected
    assert item.where == "/data/1"
    assert rejection.code == "schema_violation"
    assert any("eventTime" in e.message for e in rejection.errors)


def test_terms_and_verbs() -> None:
    assert term("http://purl.imsglobal.org/vocab/caliper/v1/action#NavigatedTo") == "NavigatedTo"
    assert term("Started") == "Started"
    assert snake_case("NavigatedTo") == "navigated_to"
    assert snake_case("Started") == "started"
