"""The Canvas normalizer's mapping decisions and its error format, one behaviour per test
(the golden files pin whole outputs)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.errors import (
    BrokerUnavailable,
    FieldError,
    MalformedPayload,
    NotFound,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.pipeline import Normalized, normalize_items, split_request
from gateway.vendors.base import Inbound
from gateway.vendors.canvas import VENDOR
from gateway.vendors.canvas.normalize import render_error
from tests.support.golden import FIXTURES
from tests.support.schemas import SCHEMAS

CANONICAL = SCHEMAS.get("canonical/event.schema.json")
RECEIVED = datetime(2026, 3, 2, 12, 0, 0, 500000, tzinfo=UTC)
PATH = {"course_id": "101", "quiz_id": "202", "id": "303"}


def run(
    *events: Any, request_id: str = "req-1", form: str | None = None, path: Any = None
) -> Normalized:
    if form is None:
        body = orjson.dumps({"quiz_submission_events": list(events)})
        inbound = Inbound("POST", "application/json", body, path_params=path or PATH)
    else:
        media = "application/x-www-form-urlencoded"
        inbound = Inbound("POST", media, form.encode(), path_params=path or PATH)
    ctx = NormalizeContext("uni", "canvas", RECEIVED, request_id)
    normalized = normalize_items(
        VENDOR, split_request(VENDOR, inbound, SCHEMAS), ctx, SCHEMAS, False
    )
    for record in normalized.canonical:
        assert not CANONICAL.errors(record), CANONICAL.errors(record)
    return normalized


def one(event: Any) -> dict[str, Any]:
    normalized = run(event)
    assert not normalized.rejected, normalized.rejected
    (record,) = normalized.canonical
    return record


def event(event_type: str, data: Any = None, stamp: str | None = "2026-03-02T09:00:00Z") -> Any:
    fields: dict[str, Any] = {"event_type": event_type}
    if stamp is not None:
        fields["client_timestamp"] = stamp
    if data is not None:
        fields["event_data"] = data
    return fields


@pytest.mark.parametrize(
    ("event_type", "canonical"),
    [
        ("session_started", "edu.assessment.session.started"),
        ("page_focused", "edu.assessment.session.focus_gained"),
        ("page_blurred", "edu.assessment.session.focus_lost"),
        ("question_viewed", "edu.assessment.item.viewed"),
        ("question_flagged", "edu.assessment.item.flagged"),
        ("question_answered", "edu.assessment.item.answered"),
        ("submission_created", "edu.assessment.attempt.started"),
        ("page_scrolled", "edu.activity.generic"),
        ("Session_Started", "edu.activity.generic"),  # types are case-sensitive in Canvas
    ],
)
def test_type_vocabulary(event_type: str, canonical: str) -> None:
    record = one(event(event_type))
    assert record["type"] == canonical
    assert record["data"]["vendor"]["event_type"] == event_type


def test_course_quiz_and_submission_are_kept_as_strings_and_no_learner_is_invented() -> None:
    record = one(event("page_blurred"))
    data = record["data"]
    assert data["course"] == {"id": "101", "type": "Course"}
    assert data["assessment"] == {"id": "202", "type": "Quiz"}
    assert data["attempt"] == {"id": "303", "type": "QuizSubmission"}
    assert "learner" not in data
    assert "actor" not in data
    assert record["subject"] == "303"
    assert record["partitionkey"] == "uni||202"


def test_client_timestamp_is_the_time_and_the_receipt_stays_apart() -> None:
    record = one(event("page_blurred", stamp="2026-03-02T10:30:05.25+01:00"))
    assert record["time"] == "2026-03-02T09:30:05.250Z"
    assert record["receivedat"] == "2026-03-02T12:00:00.500Z"
    assert record["data"]["vendor"]["client_timestamp"] == "2026-03-02T10:30:05.25+01:00"


@pytest.mark.parametrize("stamp", [None, "", "yesterday"])
def test_without_a_readable_client_timestamp_the_event_is_timed_by_its_receipt(
    stamp: str | None,
) -> None:
    payload = event("page_blurred", stamp=None)
    if stamp is not None:
        payload["client_timestamp"] = stamp
    record = one(payload)
    assert record["time"] == record["receivedat"] == "2026-03-02T12:00:00.500Z"


def test_question_viewed_is_one_record_with_every_question() -> None:
    record = one(event("question_viewed", [11, "12", " 13 "]))
    assert record["data"]["vendor"]["question_ids"] == ["11", "12", "13"]
    assert "item" not in record["data"]  # several questions: no single item
    single = one(event("question_viewed", ["11"]))
    assert single["data"]["item"] == {"id": "11", "type": "QuizQuestion"}


@pytest.mark.parametrize("key", ["questionId", "question_id", "quiz_question_id"])
@pytest.mark.parametrize(
    ("flagged", "expected"),
    [(True, True), (False, False), ("true", True), ("false", False), ("0", False), ("yes?", None)],
)
def test_question_flagged_in_every_spelling(key: str, flagged: Any, expected: bool | None) -> None:
    record = one(event("question_flagged", {key: 7, "flagged": flagged}))
    item = record["data"]["item"]
    assert item["id"] == "7"
    assert item.get("flagged") == expected
    assert ("flagged" in item) == (expected is not None)  # unreadable: unknown, not invented


def test_question_answered_names_its_questions_and_keeps_the_answers() -> None:
    answers = [{"quiz_question_id": 11, "answer": "4021"}, {"quiz_question_id": "12", "answer": 3}]
    record = one(event("question_answered", answers))
    assert record["data"]["vendor"]["question_ids"] == ["11", "12"]
    assert record["data"]["vendor"]["event_data"] == answers
    assert one(event("question_answered", answers[:1]))["data"]["item"]["id"] == "11"
    assert "item" not in one(event("question_answered", {"answer": "42"}))["data"]


def test_event_data_is_kept_as_sent_for_the_quiz_log() -> None:
    for data in ({"user_agent": "Mozilla/5.0"}, ["1", "2"], "text", 5):
        assert one(event("custom", data))["data"]["vendor"]["event_data"] == data
    assert "event_data" not in one(event("page_blurred"))["data"]["vendor"]


def test_a_resent_batch_makes_the_same_ids_and_other_content_other_ids() -> None:
    batch = [event("page_blurred"), event("page_focused", stamp="2026-03-02T09:00:01Z")]
    first = [r["id"] for r in run(*batch, request_id="a").canonical]
    again = [r["id"] for r in run(*batch, request_id="b").canonical]
    assert first == again
    assert len(set(first)) == 2
    later = run(event("page_blurred", stamp="2026-03-02T09:00:02Z")).canonical[0]["id"]
    other_data = run(event("page_blurred", data={"x": 1})).canonical[0]["id"]
    elsewhere = run(*batch, path={**PATH, "id": "304"}).canonical[0]["id"]
    assert len({first[0], later, other_data, elsewhere}) == 4


def test_flat_form_events_are_identified_by_request_and_position() -> None:
    form = "quiz_submission_events[]=page_blurred&quiz_submission_events[]=page_blurred"
    records = run(form=form, request_id="r-1").canonical
    assert len({r["id"] for r in records}) == 2  # the same type twice is two events
    for record in records:
        assert record["data"]["vendor"]["data_lost"] is True
        assert record["data"]["vendor"]["encoding"] == "flat"
        assert "client_timestamp" not in record["data"]["vendor"]
        assert "event_data" not in record["data"]["vendor"]
        assert record["time"] == record["receivedat"]
    same_request = run(form=form, request_id="r-1").canonical
    other_request = run(form=form, request_id="r-2").canonical
    assert [r["id"] for r in same_request] == [r["id"] for r in records]
    assert not {r["id"] for r in other_request} & {r["id"] for r in records}


def test_events_without_timestamp_in_json_are_identified_like_flat_ones() -> None:
    first = run(event("page_blurred", stamp=None), request_id="r-1").canonical[0]["id"]
    second = run(event("page_blurred", stamp=None), request_id="r-2").canonical[0]["id"]
    assert first != second


def test_form_events_keep_their_string_leaves_and_encoding() -> None:
    form = (
        "quiz_submission_events[][event_type]=question_flagged"
        "&quiz_submission_events[][client_timestamp]=2026-03-02T09:00:00Z"
        "&quiz_submission_events[][event_data][flagged]=false"
        "&quiz_submission_events[][event_data][questionId]=9"
    )
    (record,) = run(form=form).canonical
    assert record["data"]["item"] == {"id": "9", "type": "QuizQuestion", "flagged": False}
    assert record["data"]["vendor"]["event_data"] == {"flagged": "false", "questionId": "9"}
    assert record["data"]["vendor"]["encoding"] == "form"


def test_events_without_a_type_are_rejected_and_the_rest_kept() -> None:
    normalized = run(event("page_blurred"), {"event_data": {}}, {"event_type": ""}, None, [])
    assert len(normalized.canonical) == 1
    assert [item.where for item, _ in normalized.rejected] == [
        "/quiz_submission_events/1",
        "/quiz_submission_events/2",
        "/quiz_submission_events/3",
        "/quiz_submission_events/4",
    ]
    assert {r.code for _, r in normalized.rejected} == {"schema_violation"}


# --- errors as Canvas renders them -----------------------------------------------------------


def test_401_is_canvas_invalid_access_token_with_www_authenticate() -> None:
    reply = render_error(Unauthorized("missing credentials"))
    assert reply.status == 401
    assert orjson.loads(reply.body) == {"errors": [{"message": "Invalid access token."}]}
    assert reply.headers == {"www-authenticate": 'Bearer realm="canvas-lms"'}
    assert reply.media_type == "application/json"


def test_404_is_canvas_resource_does_not_exist() -> None:
    reply = render_error(NotFound("no attempt 7"))
    assert reply.status == 404
    assert orjson.loads(reply.body) == {
        "errors": [{"message": "The specified resource does not exist."}]
    }


@pytest.mark.parametrize(
    "error",
    [
        MalformedPayload("not valid JSON"),
        UnsupportedMediaType("not text/plain"),
        BrokerUnavailable("Kafka did not acknowledge"),
    ],
)
def test_other_errors_keep_the_canvas_shape(error: Any) -> None:
    reply = render_error(error)
    assert reply.status == error.status
    assert orjson.loads(reply.body) == {"errors": [{"message": error.message}]}


def test_field_errors_are_listed_with_their_pointers() -> None:
    error = MalformedPayload("not a valid canvas batch", (FieldError("/x", "not an array"),))
    assert orjson.loads(render_error(error).body)["errors"] == [
        {"message": "not a valid canvas batch"},
        {"message": "not an array", "pointer": "/x"},
    ]


def test_every_request_fixture_has_a_golden_file_and_no_golden_is_orphaned() -> None:
    canvas = FIXTURES / "canvas"
    requests = sorted((canvas / "in").glob("*.json"))
    assert {p.name for p in requests} == {p.name for p in (canvas / "golden").glob("*.json")}
