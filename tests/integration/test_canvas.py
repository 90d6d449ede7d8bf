"""Canvas quiz submission events end to end: Canvas's own Python client (canvasapi) and raw HTTP
against a real `gateway serve`, and the canonical records a Kafka consumer reads back."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from canvasapi import Canvas  # type: ignore[import-untyped]  # no stubs
from canvasapi.exceptions import (  # type: ignore[import-untyped]  # no stubs
    InvalidAccessToken,
    ResourceDoesNotExist,
)
from canvasapi.quiz import QuizSubmissionEvent  # type: ignore[import-untyped]  # no stubs

from tests.support.canvas import AUTH, FORM, QuizSubmission, post_json, stamped
from tests.support.gateway import TOKEN, Gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

CANONICAL = SCHEMAS.get("canonical/event.schema.json")
DEADLETTER = SCHEMAS.get("canonical/deadletter.schema.json")
CREATED_AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# canvasapi warns about any http:// base URL; the test gateway listens on loopback http.
HTTP_WARNING = "ignore:Canvas may respond unexpectedly when making requests to HTTP URLs"


async def log_of(client: httpx.AsyncClient, sub: QuizSubmission, **params: Any) -> httpx.Response:
    return await client.get(sub.events, params=params, headers=AUTH)


def of_submission(record: KafkaRecord, sub: QuizSubmission) -> bool:
    """True for a Canvas record of `sub` (the topic also holds the other vendors' records)."""
    body = record.json()
    attempt = body["data"].get("attempt", {}) if body["vendor"] == "canvas" else {}
    return bool(attempt.get("id") == str(sub.submission))


async def records_of(
    kafka: TopicReader, gateway: Gateway, sub: QuizSubmission, count: int
) -> list[dict[str, Any]]:
    """The canonical records of one submission, once `count` of them are on the topic."""

    def mine(records: list[KafkaRecord]) -> list[dict[str, Any]]:
        return [r.json() for r in records if of_submission(r, sub)]

    records = await kafka.read(gateway.canonical_topic, lambda rs: len(mine(rs)) >= count)
    found = mine(records)
    for record in found:
        assert not CANONICAL.errors(record), CANONICAL.errors(record)
        assert record["vendor"] == "canvas"
        assert record["source"] == "/tenants/demo/vendors/canvas"
    return found


# --- canvasapi, unchanged, against the gateway -------------------------------------------------


@pytest.mark.filterwarnings(HTTP_WARNING)
async def test_canvasapi_submits_events_and_reads_the_log_page_by_page(
    gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    kinds = ["session_started", "question_viewed", "page_blurred", "page_focused", "mystery"]
    types = [kinds[n % len(kinds)] for n in range(150)]  # more than one page of 100

    def with_canvasapi() -> tuple[bool, Any, list[Any], list[Any]]:
        canvas = Canvas(gateway.url, TOKEN)
        course = canvas.get_course(sub.course)
        quiz = course.get_quiz(sub.quiz)
        submission = quiz.get_quiz_submission(sub.submission)
        events = [QuizSubmissionEvent(None, {"event_type": t, "event_data": {}}) for t in types]
        submitted = submission.submit_events(events)
        log = list(submission.get_submission_events())
        first_attempt = list(submission.get_submission_events(attempt=1))
        return submitted, submission, log, first_attempt

    def log_reads() -> int:
        return sum(
            1
            for line in gateway.log_lines()
            if line.get("method") == "GET" and str(line.get("route")).endswith("/events")
        )

    reads_before = log_reads()
    submitted, submission, log, first_attempt = await asyncio.to_thread(with_canvasapi)
    assert log_reads() - reads_before == 4  # two lists, each followed over two pages by Link
    assert submitted is True  # canvasapi's test: the answer was exactly 204
    assert (submission.id, submission.quiz_id, submission.attempt) == (
        sub.submission,
        sub.quiz,
        1,
    )
    assert [e.event_type for e in log] == types
    assert [e.id for e in first_attempt] == [e.id for e in log]
    assert len({e.id for e in log}) == 150
    for event in log:
        assert isinstance(event.id, str)
        assert event.event_data is None  # canvasapi sent only the types
        assert CREATED_AT.match(event.created_at)

    records = await records_of(kafka, gateway, sub, 150)
    assert len(records) == 150
    assert {r["id"] for r in records} == {e.id for e in log}
    for record in records:
        assert record["data"]["vendor"]["data_lost"] is True
        assert record["data"]["vendor"]["encoding"] == "flat"
    by_type = {r["data"]["vendor"]["event_type"]: r["type"] for r in records}
    assert by_type == {
        "session_started": "edu.assessment.session.started",
        "question_viewed": "edu.assessment.item.viewed",
        "page_blurred": "edu.assessment.session.focus_lost",
        "page_focused": "edu.assessment.session.focus_gained",
        "mystery": "edu.activity.generic",
    }


@pytest.mark.filterwarnings(HTTP_WARNING)
async def test_canvasapi_sees_canvas_errors(gateway: Gateway) -> None:
    sub = QuizSubmission.fresh()

    def bad_token() -> None:
        Canvas(gateway.url, "not-the-token").get_course(sub.course)

    with pytest.raises(InvalidAccessToken) as raised:
        await asyncio.to_thread(bad_token)
    assert "Invalid access token." in str(raised.value)

    def unknown_attempt() -> None:
        canvas = Canvas(gateway.url, TOKEN)
        submission = (
            canvas.get_course(sub.course).get_quiz(sub.quiz).get_quiz_submission(sub.submission)
        )
        list(submission.get_submission_events(attempt=2))

    with pytest.raises(ResourceDoesNotExist):
        await asyncio.to_thread(unknown_attempt)


# --- raw HTTP: the three encodings ------------------------------------------------------------


async def test_json_batch_gets_204_and_the_log_right_after_holds_it(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    batch = [
        stamped("session_started", 0, {"user_agent": "Mozilla/5.0"}),
        stamped("question_viewed", 1, ["11", "12"]),
        stamped("question_flagged", 2, {"flagged": True, "questionId": "12"}),
        stamped("question_answered", 3, [{"quiz_question_id": "11", "answer": "4021"}]),
        stamped("page_blurred", 4),
    ]
    response = await post_json(client, sub, *batch)
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers

    # No retry loop: the GET itself waits until the read model holds what Kafka acknowledged.
    log = await log_of(client, sub)
    assert log.status_code == 200
    assert log.headers["content-type"].startswith("application/json")
    events = log.json()["quiz_submission_events"]
    assert [(e["event_type"], e["event_data"]) for e in events] == [
        ("session_started", {"user_agent": "Mozilla/5.0"}),
        ("question_viewed", ["11", "12"]),
        ("question_flagged", {"flagged": True, "questionId": "12"}),
        ("question_answered", [{"quiz_question_id": "11", "answer": "4021"}]),
        ("page_blurred", None),
    ]
    assert all(CREATED_AT.match(e["created_at"]) for e in events)

    records = {r["id"]: r for r in await records_of(kafka, gateway, sub, len(batch))}
    assert set(records) == {e["id"] for e in events}
    flagged = next(r for r in records.values() if r["type"] == "edu.assessment.item.flagged")
    assert flagged["data"]["item"] == {"id": "12", "type": "QuizQuestion", "flagged": True}
    assert flagged["time"] == "2026-03-02T09:00:02.000Z"  # the client's time...
    assert flagged["receivedat"] != flagged["time"]  # ...and the receipt, kept apart
    assert flagged["data"]["course"]["id"] == str(sub.course)
    assert flagged["data"]["assessment"]["id"] == str(sub.quiz)
    assert "learner" not in flagged["data"]


async def test_rack_nested_form_is_read_as_rails_reads_it(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    form = [
        ("quiz_submission_events[][client_timestamp]", "2026-03-02T10:00:00Z"),
        ("quiz_submission_events[][event_type]", "question_flagged"),
        ("quiz_submission_events[][event_data][flagged]", "false"),
        ("quiz_submission_events[][event_data][quiz_question_id]", "12"),
        ("quiz_submission_events[][client_timestamp]", "2026-03-02T10:00:05Z"),
        ("quiz_submission_events[][event_type]", "question_viewed"),
        ("quiz_submission_events[][event_data][]", "11"),
        ("quiz_submission_events[][event_data][]", "12"),
    ]
    body = urlencode(form).encode()  # in this order: Rack's new-element rule depends on it
    response = await client.post(sub.events, content=body, headers={**AUTH, "Content-Type": FORM})
    assert response.status_code == 204
    assert response.content == b""
    events = (await log_of(client, sub)).json()["quiz_submission_events"]
    assert [(e["event_type"], e["event_data"]) for e in events] == [
        ("question_flagged", {"flagged": "false", "quiz_question_id": "12"}),
        ("question_viewed", ["11", "12"]),
    ]
    records = await records_of(kafka, gateway, sub, 2)
    flagged = next(r for r in records if r["type"] == "edu.assessment.item.flagged")
    assert flagged["data"]["item"]["flagged"] is False  # the string "false" is false
    assert flagged["data"]["vendor"]["encoding"] == "form"


async def test_missing_array_and_unknown_types_still_get_204(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    for body, media in ((b"{}", "application/json"), (b"", FORM), (b"", "application/json")):
        response = await client.post(
            sub.events, content=body, headers={**AUTH, "Content-Type": media}
        )
        assert response.status_code == 204
        assert response.content == b""
    assert (await log_of(client, sub)).json() == {"quiz_submission_events": []}
    assert (await post_json(client, sub, stamped("tab_switched", 9, {"to": 2}))).status_code == 204
    (record,) = await records_of(kafka, gateway, sub, 1)
    assert record["type"] == "edu.activity.generic"
    assert record["data"]["action"] == "tab_switched"
    assert record["data"]["vendor"]["event_data"] == {"to": 2}


# --- authentication and errors in Canvas's shapes ---------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic ZGV2LXRva2Vu", "dev-token"], ids=repr
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_bad_credentials_get_canvas_401(
    client: httpx.AsyncClient, authorization: str | None, method: str
) -> None:
    sub = QuizSubmission.fresh()
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    body = orjson.dumps({"quiz_submission_events": [stamped("page_blurred", 1)]})
    response = await client.request(method, sub.events, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"errors": [{"message": "Invalid access token."}]}
    assert response.headers["www-authenticate"] == 'Bearer realm="canvas-lms"'
    assert (await log_of(client, sub)).json() == {"quiz_submission_events": []}


async def test_access_token_parameter_in_query_or_form(client: httpx.AsyncClient) -> None:
    sub = QuizSubmission.fresh()
    body = orjson.dumps({"quiz_submission_events": [stamped("page_blurred", 1)]})
    query = await client.post(
        sub.events,
        params={"access_token": TOKEN},
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert query.status_code == 204
    form = await client.post(
        sub.events,
        content=f"access_token={TOKEN}&quiz_submission_events[]=page_focused".encode(),
        headers={"Content-Type": FORM},
    )
    assert form.status_code == 204
    log = await client.get(sub.events, params={"access_token": TOKEN})
    assert [e["event_type"] for e in log.json()["quiz_submission_events"]] == [
        "page_blurred",
        "page_focused",
    ]
    wrong = await client.get(sub.events, params={"access_token": "nope"})
    assert wrong.status_code == 401


@pytest.mark.parametrize("attempt", ["2", "0", "latest"])
async def test_unknown_attempt_is_canvas_404(client: httpx.AsyncClient, attempt: str) -> None:
    sub = QuizSubmission.fresh()
    assert (await post_json(client, sub, stamped("page_blurred", 1))).status_code == 204
    response = await log_of(client, sub, attempt=attempt)
    assert response.status_code == 404
    assert response.json() == {"errors": [{"message": "The specified resource does not exist."}]}
    assert len((await log_of(client, sub, attempt=1)).json()["quiz_submission_events"]) == 1


@pytest.mark.parametrize(
    "case",
    [
        (b"{nope", "application/json", 400, "not valid JSON"),
        (b'{"quiz_submission_events": "page_blurred"}', "application/json", 400, "canvas batch"),
        (b"a=1&a[]=2", FORM, 400, "expects 'a' to be an array"),
        (b"quiz_submission_events[]=x", "text/plain", 415, "application/json or"),
    ],
)
async def test_malformed_bodies_get_canvas_errors_and_are_dead_lettered(
    client: httpx.AsyncClient,
    gateway: Gateway,
    kafka: TopicReader,
    case: tuple[bytes, str, int, str],
) -> None:
    body, media, status, message = case
    marker = uuid.uuid4().hex
    response = await client.post(
        QuizSubmission.fresh().events,
        content=body,
        headers={**AUTH, "Content-Type": media, "X-Request-Id": marker},
    )
    assert response.status_code == status
    errors = response.json()["errors"]
    assert message in errors[0]["message"]
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: marker in [r.json()["request_id"] for r in rs]
    )
    (letter,) = [r.json() for r in dead if r.json()["request_id"] == marker]
    assert not DEADLETTER.errors(letter), DEADLETTER.errors(letter)
    assert letter["vendor"] == "canvas"
    assert letter["original_body"] == body.decode()


async def test_a_dead_lettered_form_body_keeps_no_access_token(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    marker = uuid.uuid4().hex
    body = b"access_token=dev-token&a=1&a[]=2"  # authenticates, then cannot be decoded
    response = await client.post(
        QuizSubmission.fresh().events,
        content=body,
        headers={"Content-Type": FORM, "X-Request-Id": marker},
    )
    assert response.status_code == 400
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: marker in [r.json()["request_id"] for r in rs]
    )
    (letter,) = [r for r in dead if r.json()["request_id"] == marker]
    assert b"dev-token" not in letter.value
    assert "access_token=%5Bredacted%5D" in letter.json()["original_body"]


async def test_events_without_a_type_are_dead_lettered_and_the_batch_succeeds(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    untyped = {"client_timestamp": "2026-03-02T09:00:00Z", "event_data": {"sub": sub.submission}}
    response = await post_json(client, sub, stamped("page_blurred", 1), untyped)
    assert response.status_code == 204
    dead = await kafka.read(
        gateway.deadletter_topic, lambda rs: untyped in [r.json().get("original") for r in rs]
    )
    (letter,) = [r.json() for r in dead if r.json().get("original") == untyped]
    assert letter["reason"] == "schema_violation"
    assert letter["where"] == "/quiz_submission_events/1"
    assert [
        e["event_type"] for e in (await log_of(client, sub)).json()["quiz_submission_events"]
    ] == ["page_blurred"]


# --- the quiz log: pagination, attempts, duplicates -------------------------------------------


async def test_link_pagination_is_absolute_and_keeps_attempt_and_per_page(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    sub = QuizSubmission.fresh()
    batch = [stamped("page_blurred" if n % 2 else "page_focused", n) for n in range(5)]
    assert (await post_json(client, sub, *batch)).status_code == 204

    collected: list[dict[str, Any]] = []
    url: str | None = f"{gateway.url}{sub.events}?per_page=2"
    pages = 0
    while url is not None:
        response = await client.get(url, headers=AUTH)
        assert response.status_code == 200
        links = {link["rel"]: link["url"] for link in response.links.values()}
        assert all(u.startswith(f"{gateway.url}/api/v1/") for u in links.values())
        assert all("attempt=1" in u and "per_page=2" in u for u in links.values())
        assert links["last"].endswith("page=3&per_page=2")
        collected += response.json()["quiz_submission_events"]
        pages += 1
        url = links.get("next")
    assert pages == 3
    assert [e["event_type"] for e in collected] == [e["event_type"] for e in batch]
    assert len({e["id"] for e in collected}) == 5

    beyond = await log_of(client, sub, per_page=2, page=9)
    assert beyond.json() == {"quiz_submission_events": []}
    clamped = await log_of(client, sub, per_page=1000)
    assert 'per_page=100>; rel="current"' in clamped.headers["link"]
    default = await log_of(client, sub)
    assert "per_page=10>" in default.headers["link"]


async def test_a_resent_batch_makes_no_duplicates(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    sub = QuizSubmission.fresh()
    batch = [stamped("page_blurred", 1), stamped("page_focused", 2), stamped("page_blurred", 3)]
    for _ in range(3):  # the browser re-sends after a failure
        assert (await post_json(client, sub, *batch)).status_code == 204
    assert (await post_json(client, sub, *batch[:1], stamped("page_focused", 4))).status_code == 204
    events = (await log_of(client, sub)).json()["quiz_submission_events"]
    assert [e["event_type"] for e in events] == [
        "page_blurred",
        "page_focused",
        "page_blurred",
        "page_focused",
    ]
    records = await records_of(kafka, gateway, sub, 4)
    settled = await kafka.settle(gateway.canonical_topic, quiet=1.0)
    mine = [r.json()["id"] for r in settled if of_submission(r, sub)]
    assert len(mine) == len(set(mine)) == 4
    assert {r["id"] for r in records} == {e["id"] for e in events}


async def test_submission_created_starts_the_next_attempt(client: httpx.AsyncClient) -> None:
    sub = QuizSubmission.fresh()
    first = [stamped("submission_created", 0, {"quiz_version": 1}), stamped("page_blurred", 1)]
    second = [stamped("submission_created", 60, {"quiz_version": 1}), stamped("page_focused", 61)]
    assert (await post_json(client, sub, *first)).status_code == 204
    assert (await post_json(client, sub, *second)).status_code == 204

    latest = (await log_of(client, sub)).json()["quiz_submission_events"]
    assert [e["event_type"] for e in latest] == ["submission_created", "page_focused"]
    earlier = (await log_of(client, sub, attempt=1)).json()["quiz_submission_events"]
    assert [e["event_type"] for e in earlier] == ["submission_created", "page_blurred"]
    shown = await client.get(sub.events.removesuffix("/events"), headers=AUTH)
    assert shown.json() == {
        "quiz_submissions": [
            {"id": sub.submission, "quiz_id": sub.quiz, "attempt": 2, "user_id": None}
        ]
    }


async def test_the_course_and_quiz_canvasapi_walks_through(client: httpx.AsyncClient) -> None:
    sub = QuizSubmission.fresh()
    course = await client.get(f"/api/v1/courses/{sub.course}", headers=AUTH)
    assert course.json() == {"id": sub.course, "name": None, "course_code": None}
    quiz = await client.get(f"/api/v1/courses/{sub.course}/quizzes/{sub.quiz}", headers=AUTH)
    assert quiz.json() == {"id": sub.quiz, "title": None}
    sis = await client.get("/api/v1/courses/sis_course_id:BIO-101", headers=AUTH)
    assert sis.json()["id"] == "sis_course_id:BIO-101"
    assert (await client.get(f"/api/v1/courses/{sub.course}")).status_code == 401
