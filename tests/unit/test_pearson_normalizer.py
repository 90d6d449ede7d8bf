"""The Pearson vendor's decisions, one behaviour per test (the golden files pin the rest)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import content_digest, record_id
from gateway.deadletter import DeadLetter
from gateway.errors import UnsupportedMediaType
from gateway.pipeline import normalize_items, split_request
from gateway.tools.replay import rebuild
from gateway.vendors.base import Inbound
from gateway.vendors.pearson import VENDOR
from gateway.vendors.pearson.normalize import decode
from tests.support.golden import cases, outcome
from tests.support.pearson import (
    CTX,
    DEAD_LETTERED,
    DELIVERIES,
    FORM,
    GOLDEN,
    STUDENT_EXAM_COMPLETED,
    delivery,
    exam_completed,
    fixture_fields,
    form,
    one,
    run,
)
from tests.support.schemas import SCHEMAS

CANONICAL = SCHEMAS.get("canonical/event.schema.json")


def test_a_completed_exam_is_a_submitted_attempt_of_the_learner() -> None:
    record = one(delivery(exam_completed()))
    assert record["type"] == "edu.assessment.attempt.submitted"
    assert record["time"] == "2013-05-17T14:06:10.688Z"  # eventDate
    data = record["data"]
    assert data["action"] == "completed"
    assert data["learner"] == {"id": "7777777", "type": "user"}
    assert "actor" not in data  # the actor is the learner
    assert data["assessment"]["id"] == "123456"
    assert data["attempt"]["started_at"] == "2013-05-17T14:04:38.000Z"
    assert data["attempt"]["ended_at"] == "2013-05-17T14:06:10.673Z"
    assert record["partitionkey"] == "uni|7777777|123456"
    assert record["subject"] == data["attempt"]["id"] == "pearson.ls.assessment.studentexam_123456"


def test_the_record_id_is_the_message_id_and_the_message_content() -> None:
    fields = delivery(exam_completed())
    message = {
        "MESSAGE-ID": fields["MESSAGE-ID"],
        "MESSAGE-TYPE": fields["MESSAGE-TYPE"],
        "PAYLOAD-CONTENT-TYPE": fields["PAYLOAD-CONTENT-TYPE"],
        "PAYLOAD": exam_completed(),
    }
    expected = record_id("uni", "pearson", fields["MESSAGE-ID"], content_digest(message))
    assert one(fields)["id"] == expected


def test_a_redelivery_is_the_same_record_whatever_changes_per_delivery() -> None:
    first = delivery(exam_completed(), timestamp="2015-01-20T18:58:11Z")
    # Pearson's redelivery: same MESSAGE-ID and content, a new attempt id and a new signature;
    # the event JSON re-serialized (key order, whitespace) is still the same content.
    event = exam_completed()
    reordered = orjson.dumps(dict(reversed(list(event.items()))), option=orjson.OPT_INDENT_2)
    again = delivery(
        reordered.decode(),
        message_id=first["MESSAGE-ID"],
        timestamp="2015-01-21T07:00:00Z",
        delimiter="~",
    )
    assert again["DELIVERY-ATTEMPT-ID"] != first["DELIVERY-ATTEMPT-ID"]
    assert again["AUTHORIZATION"] != first["AUTHORIZATION"]
    assert again["PAYLOAD"] != first["PAYLOAD"]
    one_record, other = one(first), one(again)
    assert one_record["id"] == other["id"]
    # Each record says which delivery it came from; the id does not depend on it.
    assert one_record["data"]["vendor"]["delivery_id"] == first["DELIVERY-ATTEMPT-ID"]
    assert other["data"]["vendor"]["delivery_id"] == again["DELIVERY-ATTEMPT-ID"]


def test_a_reused_message_id_with_other_content_is_another_record() -> None:
    first = delivery(exam_completed())
    changed = delivery(exam_completed(isLateSubmission=True), message_id=first["MESSAGE-ID"])
    assert one(first)["id"] != one(changed)["id"]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (123456, "123456"),
        ("123456", "123456"),
        (123456.0, "123456"),
        (" 123456 ", "123456"),
        ("ABC-9", "ABC-9"),
        (0, "0"),
    ],
)
def test_ids_are_strings(sent: Any, expected: str) -> None:
    event = exam_completed(examId=sent)
    event["actor"]["id"] = sent
    event["contexts"]["course"]["id"] = sent
    event["contexts"]["ep"] = {"id": sent}
    data = one(delivery(event))["data"]
    assert data["assessment"]["id"] == expected
    assert data["learner"]["id"] == expected
    assert data["course"]["id"] == expected
    assert data["institution"] == {"id": expected, "ep_id": expected}


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        (None, None),
    ],
)
def test_flags_are_booleans_also_when_sent_as_strings(sent: Any, expected: bool | None) -> None:
    event = exam_completed(isLateSubmission=sent, isComplete=sent, isAutoGradingOn=sent)
    data = one(delivery(event))["data"]
    assert data["attempt"].get("is_late") is expected
    assert data["attempt"].get("is_complete") is expected
    assert data["assessment"].get("is_auto_grading_on") is expected


@pytest.mark.parametrize("flag", ["yes", "1", 1, "", "t"], ids=repr)
def test_a_flag_that_is_no_boolean_is_a_schema_violation(flag: Any) -> None:
    normalized = run(delivery(exam_completed(isLateSubmission=flag)))
    assert not normalized.canonical
    ((_, rejection),) = normalized.rejected
    assert rejection.code == "schema_violation"
    assert [e.path for e in rejection.errors] == ["/PAYLOAD/object/isLateSubmission"]


def test_no_names_emails_or_usernames_in_the_record() -> None:
    text = orjson.dumps(one(delivery(exam_completed()))).decode()
    for personal in ("John", "Smith", "john.smith@domain.com", "jsmith123"):
        assert personal not in text


def test_the_original_when_configured_is_the_message_without_credentials() -> None:
    fields = delivery(exam_completed())
    original = one(fields, include_original=True)["data"]["original"]
    assert original == {
        "MESSAGE-ID": fields["MESSAGE-ID"],
        "MESSAGE-TYPE": STUDENT_EXAM_COMPLETED,
        "PAYLOAD-CONTENT-TYPE": "application/json",
        "PAYLOAD": exam_completed(),
    }


def test_course_and_institution_mapping() -> None:
    event = exam_completed()
    event["contexts"]["course"].update(callNumbers=["40123", 40124], nodes=[1, "2"])
    data = one(delivery(event))["data"]
    assert data["course"] == {
        "id": "2022425",
        "name": "What About Bob? 101",
        "course_number": "WAB - 101",
        "call_numbers": ["40123", "40124"],
        "node_ids": ["1", "2"],
    }
    assert data["institution"] == {"id": "epsamplestring", "ep_id": "987654"}


@pytest.mark.parametrize(
    ("contexts", "course", "institution"),
    [
        (None, None, None),
        ({}, None, None),
        ({"course": None, "ep": None}, None, None),
        ({"course": {"title": "No id"}, "ep": {}}, None, None),
        ({"ep": {"clientString": "only-the-string"}}, None, {"id": "only-the-string"}),
        ({"ep": {"id": 5, "clientString": ""}}, None, {"id": "5", "ep_id": "5"}),
    ],
)
def test_unknown_contexts_are_left_out(
    contexts: Any, course: dict[str, Any] | None, institution: dict[str, Any] | None
) -> None:
    event = exam_completed()
    event["contexts"] = contexts
    data = one(delivery(event))["data"]
    assert data.get("course") == course
    assert data.get("institution") == institution


@pytest.mark.parametrize(
    ("comment", "kept"),
    [(" ", None), ("", None), (None, None), ("Needs review", "Needs review")],
    ids=repr,
)
def test_a_blank_comment_is_no_comment(comment: str | None, kept: str | None) -> None:
    data = one(delivery(exam_completed(comment=comment)))["data"]
    assert data["attempt"].get("comment") == kept


def test_unknown_times_are_left_out() -> None:
    data = one(delivery(exam_completed(startTime="", endTime=None)))["data"]
    assert "started_at" not in data["attempt"]
    assert "ended_at" not in data["attempt"]


def test_a_timestamp_that_is_no_date_is_unmappable_with_its_pointer() -> None:
    normalized = run(delivery(exam_completed(endTime="2013-13-01T00:00:00.000Z")))
    ((_, rejection),) = normalized.rejected
    assert rejection.code == "unmappable"
    assert rejection.errors[0].path == "/PAYLOAD/object/endTime"


def test_a_payload_of_another_event_type_is_a_schema_violation() -> None:
    event = exam_completed()
    event["eventType"] = "pearson.ls.gradebook.grade.created"
    ((_, rejection),) = run(delivery(event)).rejected
    assert rejection.code == "schema_violation"
    assert [e.path for e in rejection.errors] == ["/PAYLOAD/eventType"]


@pytest.mark.parametrize(
    "message_type",
    ["pearson.ls.gradebook.grade.created", "pearson.ls.threads.topic.created", "x"],
)
def test_other_message_types_are_dead_lettered_whole_not_normalized(message_type: str) -> None:
    payload = {"eventId": "1", "eventType": message_type, "object": {"id": "o"}}
    fields = delivery(payload, message_type=message_type)
    normalized = run(fields)
    assert not normalized.canonical
    ((item, rejection),) = normalized.rejected
    assert rejection.code == "unmappable"
    assert rejection.errors[0].path == "/MESSAGE-TYPE"
    assert message_type in rejection.message
    assert item.payload == {
        "MESSAGE-ID": fields["MESSAGE-ID"],
        "MESSAGE-TYPE": message_type,
        "PAYLOAD-CONTENT-TYPE": "application/json",
        "PAYLOAD": payload,
    }


def test_another_message_type_with_a_payload_that_is_no_json_keeps_the_string() -> None:
    fields = delivery("<grade/>", message_type="pearson.ls.gradebook.grade.created")
    ((item, rejection),) = run(fields).rejected
    assert rejection.code == "unmappable"
    assert item.payload["PAYLOAD"] == "<grade/>"


def test_a_payload_that_is_no_json_is_kept_as_sent() -> None:
    fields = delivery('{"eventId": "1",')
    ((item, rejection),) = run(fields).rejected
    assert rejection.code == "schema_violation"
    assert [e.path for e in rejection.errors] == ["/PAYLOAD"]
    assert item.payload["PAYLOAD"] == '{"eventId": "1",'


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=UTF-8", "application/vnd.pearson+json", ""],
    ids=repr,
)
def test_the_payload_is_read_as_json_when_declared_so_or_undeclared(content_type: str) -> None:
    assert one(delivery(exam_completed(), content_type=content_type))["data"]["learner"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml"])
def test_a_payload_declared_as_something_else_is_not_parsed(content_type: str) -> None:
    ((item, rejection),) = run(delivery(exam_completed(), content_type=content_type)).rejected
    assert rejection.code == "schema_violation"
    assert {e.path for e in rejection.errors} == {"/PAYLOAD-CONTENT-TYPE", "/PAYLOAD"}
    assert item.payload["PAYLOAD"] == orjson.dumps(exam_completed()).decode()


@pytest.mark.parametrize("missing", ["MESSAGE-ID", "MESSAGE-TYPE", "PAYLOAD"])
def test_a_delivery_missing_a_message_field_is_a_schema_violation(missing: str) -> None:
    fields = delivery(exam_completed())
    del fields[missing]
    ((item, rejection),) = run(fields).rejected
    assert rejection.code == "schema_violation"
    assert any(missing in e.message for e in rejection.errors)
    assert missing not in item.payload


def test_neither_the_signature_nor_the_delivery_attempt_is_part_of_the_message() -> None:
    fields = delivery(exam_completed(), delimiter="~")
    (item,) = split_request(VENDOR, Inbound("POST", FORM, form(fields)), SCHEMAS)
    assert set(item.payload) == {"MESSAGE-ID", "MESSAGE-TYPE", "PAYLOAD-CONTENT-TYPE", "PAYLOAD"}
    assert item.identity == fields["MESSAGE-ID"]
    assert item.meta == {"delivery_id": fields["DELIVERY-ATTEMPT-ID"]}


def test_a_repeated_field_counts_by_its_first_value_as_in_the_signature_check() -> None:
    # The signature was verified over the first PAYLOAD; a second one appended must not win.
    fields = delivery(exam_completed())
    forged = copy.deepcopy(exam_completed())
    forged["actor"]["id"] = "someone-else"
    body = form(fields) + b"&" + form({"PAYLOAD": orjson.dumps(forged).decode()})
    (item,) = split_request(VENDOR, Inbound("POST", FORM, body), SCHEMAS)
    assert item.payload["PAYLOAD"]["actor"]["id"] == "7777777"


def test_a_dead_letter_fixed_and_replayed_is_the_record_a_live_delivery_makes() -> None:
    broken = exam_completed()
    del broken["actor"]["id"]
    fields = delivery(broken)
    ((item, rejection),) = run(fields).rejected
    assert rejection.code == "schema_violation"
    # What the dead-letter topic holds of it (schemas/canonical/deadletter.schema.json), as JSON.
    letter = orjson.loads(
        orjson.dumps(
            {
                "original": item.payload,
                "where": item.where,
                "item": {"schema": item.schema, "identity": item.identity, "meta": item.meta},
            }
        )
    )
    letter["original"]["PAYLOAD"]["actor"]["id"] = "7777777"  # the fix
    replayed = normalize_items(
        VENDOR, rebuild(DeadLetter.from_dict(letter), VENDOR, SCHEMAS), CTX, SCHEMAS, False
    )
    live = delivery(
        exam_completed(),
        message_id=fields["MESSAGE-ID"],
        attempt_id=fields["DELIVERY-ATTEMPT-ID"],
    )
    assert replayed.canonical == [one(live)]


def test_only_forms_are_decoded() -> None:
    # Unreachable over HTTP (the signature is read from forms only); stated all the same.
    with pytest.raises(UnsupportedMediaType, match="x-www-form-urlencoded"):
        decode(Inbound("POST", "application/json", b"{}"))


def test_bodies_that_cannot_be_split_are_dead_lettered_and_answered_200() -> None:
    assert VENDOR.accept_malformed is True
    assert (VENDOR.success.status, VENDOR.success.body) == (200, b"")


# --- the fixtures (tests/fixtures/pearson/in/; their golden files: tests/unit/test_golden.py) ---


def delivered(path: Path) -> dict[str, Any]:
    """What the golden driver makes of a delivery fixture (signed, form-encoded)."""
    (case,) = [case for case in cases("pearson") if case.source == path]
    return outcome(VENDOR, case)


@pytest.mark.parametrize("path", DELIVERIES, ids=lambda p: p.name)
def test_no_credential_and_no_personal_data_leaves(path: Path) -> None:
    """The MAC never leaves (not even in a dead letter); names, emails and usernames stay out
    of canonical records (the PII policy comes later: ids only)."""
    fields = fixture_fields(path)
    text = orjson.dumps(delivered(path)).decode()
    assert fields["AUTHORIZATION"].split("|")[2] not in text
    assert "AUTHORIZATION" not in text
    canonical = orjson.dumps(delivered(path)["canonical"]).decode()
    payload = orjson.loads(path.read_bytes())["fields"]["PAYLOAD"]
    actor = payload.get("actor", {}) if isinstance(payload, dict) else {}
    for key in ("firstName", "lastName", "emailAddress", "userName"):
        if actor.get(key):
            assert actor[key] not in canonical, key


def test_every_delivery_fixture_has_its_golden_file() -> None:
    assert DELIVERIES
    assert {p.name for p in GOLDEN.glob("*.json")} == {p.name for p in DELIVERIES}
    assert set(DEAD_LETTERED) <= {p.name for p in DELIVERIES}
