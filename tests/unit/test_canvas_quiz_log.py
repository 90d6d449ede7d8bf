"""The quiz log's read model (a real SQLite file) and its Canvas pagination rules."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.errors import InvalidParameter, NotFound
from gateway.pipeline import normalize_items, split_request
from gateway.vendors.base import Inbound
from gateway.vendors.canvas import VENDOR
from gateway.vendors.canvas.normalize import MAX_ID, check_path_ids
from gateway.vendors.canvas.quiz_log import (
    MAX_PAGE,
    MAX_PER_PAGE,
    LoggedEvent,
    QuizLogStore,
    Submission,
    canvas_id,
    canvas_time,
    events_path,
    link_base,
    link_header,
    logged_event,
    page_params,
    requested_attempt,
)
from tests.support.schemas import SCHEMAS

TOPIC = "edu.events.v1"
SUB = Submission("uni", "101", "202", "303")
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def records(*events: Any, at: datetime = START, path: Any = None) -> list[dict[str, Any]]:
    """Canonical records, as the pipeline publishes them, of one JSON POST."""
    body = orjson.dumps({"quiz_submission_events": list(events)})
    params = path or {"course_id": "101", "quiz_id": "202", "id": "303"}
    inbound = Inbound("POST", "application/json", body, path_params=params)
    ctx = NormalizeContext("uni", "canvas", at, "req")
    items = split_request(VENDOR, inbound, SCHEMAS)
    return normalize_items(VENDOR, items, ctx, SCHEMAS, False).canonical


def logged(*events: Any, at: datetime = START, path: Any = None) -> list[LoggedEvent]:
    rows = [logged_event(r) for r in records(*events, at=at, path=path)]
    assert all(rows)
    return [r for r in rows if r is not None]


def stamped(event_type: str, second: int, data: Any = None) -> dict[str, Any]:
    return {
        "event_type": event_type,
        "client_timestamp": f"2026-03-02T09:00:{second:02d}Z",
        "event_data": data,
    }


@pytest.fixture
def store(tmp_path: Path) -> Any:
    opened = QuizLogStore(tmp_path / "state" / "quiz-log.sqlite3")
    opened.open()
    yield opened
    opened.close()


def test_a_canonical_record_carries_everything_the_quiz_log_returns() -> None:
    (row,) = logged(stamped("question_viewed", 1, ["11", 12]))
    assert row.submission == SUB
    assert row.event_type == "question_viewed"
    assert row.event_data is not None
    assert orjson.loads(row.event_data) == ["11", 12]  # as sent, not as normalized
    assert row.created_at == "2026-03-02T12:00:00.000Z"  # received, not the client's time


def test_records_of_other_vendors_or_shapes_are_not_logged() -> None:
    (record,) = records(stamped("page_blurred", 1))
    assert logged_event({**record, "vendor": "caliper"}) is None
    assert logged_event({**record, "data": {**record["data"], "course": None}}) is None
    assert logged_event([record]) is None
    assert logged_event(record) is not None


def test_store_keeps_rows_once_and_offsets_with_them(store: QuizLogStore) -> None:
    rows = logged(stamped("page_blurred", 1), stamped("page_focused", 2))
    assert store.apply(TOPIC, rows, {0: 2}) == 2
    assert store.apply(TOPIC, rows, {0: 4}) == 0  # the same records again: nothing new
    assert store.offsets(TOPIC) == {0: 4}
    assert store.offsets("another.topic") == {}
    total, page = store.page(SUB, 1, 0, 10)
    assert total == 2
    assert [(r[1], r[2]) for r in page] == [("page_blurred", None), ("page_focused", None)]


def test_a_failed_batch_stores_neither_rows_nor_offsets(store: QuizLogStore) -> None:
    good = logged(stamped("page_blurred", 1))
    store.apply(TOPIC, good, {0: 1})
    broken = logged(stamped("page_focused", 2))[0]
    bad = LoggedEvent(broken.record_id, SUB, None, None, broken.created_at)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.apply(TOPIC, [*logged(stamped("question_viewed", 3)), bad], {0: 9})
    assert store.offsets(TOPIC) == {0: 1}
    assert store.page(SUB, 1, 0, 10)[0] == 1


def test_offsets_only_move_forward_when_workers_share_the_file(store: QuizLogStore) -> None:
    store.apply(TOPIC, [], {0: 10, 1: 3})
    store.apply(TOPIC, [], {0: 4, 1: 5})  # a slower worker process
    assert store.offsets(TOPIC) == {0: 10, 1: 5}


def test_the_log_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "quiz-log.sqlite3"
    first = QuizLogStore(path)
    first.open()
    first.apply(TOPIC, logged(stamped("page_blurred", 1)), {2: 7})
    first.close()
    again = QuizLogStore(path)
    again.open()
    try:
        assert again.offsets(TOPIC) == {2: 7}
        assert again.page(SUB, 1, 0, 10)[0] == 1
    finally:
        again.close()


def test_order_is_receive_time_then_consumption_order(store: QuizLogStore) -> None:
    later = logged(stamped("page_focused", 1), at=START + timedelta(seconds=5))
    earlier = logged(stamped("question_viewed", 59), stamped("page_blurred", 58), at=START)
    store.apply(TOPIC, later + earlier, {})  # consumed out of receive order (two partitions)
    _, page = store.page(SUB, 1, 0, 10)
    assert [r[1] for r in page] == ["question_viewed", "page_blurred", "page_focused"]
    _, second = store.page(SUB, 1, 1, 1)
    assert [r[1] for r in second] == ["page_blurred"]


def test_logs_are_per_tenant_and_per_submission(store: QuizLogStore) -> None:
    store.apply(TOPIC, logged(stamped("page_blurred", 1)), {})
    other = logged(
        stamped("page_blurred", 1), path={"course_id": "101", "quiz_id": "202", "id": "9"}
    )
    store.apply(TOPIC, other, {})
    assert store.page(SUB, 1, 0, 10)[0] == 1
    assert store.page(Submission("other-tenant", "101", "202", "303"), 1, 0, 10)[0] == 0
    assert store.page(Submission("uni", "101", "202", "9"), 1, 0, 10)[0] == 1


def test_attempts_are_counted_by_submission_created(store: QuizLogStore) -> None:
    assert store.latest_attempt(SUB) == 1  # nothing known yet: the first attempt
    store.apply(TOPIC, logged(stamped("page_blurred", 1)), {})
    assert store.latest_attempt(SUB) == 1
    # The first submission_created belongs to the attempt its events are in.
    store.apply(TOPIC, logged(stamped("submission_created", 2), stamped("page_focused", 3)), {})
    assert store.latest_attempt(SUB) == 1
    store.apply(TOPIC, logged(stamped("submission_created", 4), stamped("page_blurred", 5)), {})
    assert store.latest_attempt(SUB) == 2
    assert [r[1] for r in store.page(SUB, 1, 0, 10)[1]] == [
        "page_blurred",
        "submission_created",
        "page_focused",
    ]
    assert [r[1] for r in store.page(SUB, 2, 0, 10)[1]] == ["submission_created", "page_blurred"]
    # A re-consumed submission_created (same record) starts nothing.
    store.apply(TOPIC, logged(stamped("submission_created", 4)), {})
    assert store.latest_attempt(SUB) == 2


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (10, 1)),
        ({"per_page": "100", "page": "3"}, (100, 3)),
        ({"per_page": "500"}, (100, 1)),
        ({"per_page": "0", "page": "0"}, (10, 1)),
        ({"per_page": "-5", "page": "x"}, (10, 1)),
        ({"per_page": " 7 "}, (7, 1)),
    ],
)
def test_per_page_and_page(query: dict[str, str], expected: tuple[int, int]) -> None:
    assert page_params(query) == expected


def test_attempt_defaults_to_the_latest_and_unknown_ones_are_not_found() -> None:
    assert requested_attempt(None, 3) == 3
    assert requested_attempt("", 3) == 3
    assert requested_attempt("2", 3) == 2
    for unknown in ("4", "0", "-1", "latest", "1.5"):
        with pytest.raises(NotFound):
            requested_attempt(unknown, 3)


def test_link_header_is_absolute_and_keeps_attempt_and_per_page() -> None:
    path = events_path(Submission("uni", "sis_course_id:A B", "202", "303"))
    assert path == "/api/v1/courses/sis_course_id:A%20B/quizzes/202/submissions/303/events"
    link = link_header(
        "https://lms.example.edu:8443", path, attempt=2, per_page=100, page=2, total=250
    )
    base = f"https://lms.example.edu:8443{path}?attempt=2"
    assert link == ",".join(
        [
            f'<{base}&page=2&per_page=100>; rel="current"',
            f'<{base}&page=3&per_page=100>; rel="next"',
            f'<{base}&page=1&per_page=100>; rel="prev"',
            f'<{base}&page=1&per_page=100>; rel="first"',
            f'<{base}&page=3&per_page=100>; rel="last"',
        ]
    )
    single = link_header("http://h", "/p", attempt=1, per_page=10, page=1, total=0)
    assert 'rel="next"' not in single
    assert 'rel="prev"' not in single
    assert '<http://h/p?attempt=1&page=1&per_page=10>; rel="last"' in single


def test_canvas_formats() -> None:
    assert canvas_time("2026-03-02T12:00:00.123Z") == "2026-03-02T12:00:00Z"
    assert canvas_id("101") == 101
    assert canvas_id("0101") == "0101"  # would not round-trip as a number
    assert canvas_id("sis_course_id:A") == "sis_course_id:A"


# --- hostile numbers and hosts (issue #18) ----------------------------------------------------

WILDCARD = "0.0.0.0"  # noqa: S104  # a listen address in a setting, not a socket bound here


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"page": "٣"}, (10, 1)),  # U+0663: int() reads 3; not a number here (as "x" is not)
        ({"page": "\uff13"}, (10, 1)),  # FULLWIDTH DIGIT THREE
        ({"per_page": "²"}, (10, 1)),  # isdigit() is True, int() raises
        ({"page": "3_0"}, (10, 1)),  # int() reads 30
        ({"page": "+3"}, (10, 1)),
        ({"per_page": "9" * 30}, (100, 1)),  # clamped, as Canvas clamps
        ({"per_page": "9" * 5000}, (100, 1)),
        ({"page": str(MAX_PAGE)}, (10, MAX_PAGE)),
        ({"page": "0" * 30 + "3"}, (10, 3)),
        ({"page": "0" * 5000 + "3"}, (10, 3)),  # int() refuses 4300+ digits, zeros included
        ({"page": "0" * 5000}, (10, 1)),
    ],
)
def test_only_ascii_numbers_count(query: dict[str, str], expected: tuple[int, int]) -> None:
    assert page_params(query) == expected


@pytest.mark.parametrize("page", [str(MAX_PAGE + 1), "99999999999999999999", "9" * 5000])
def test_a_page_whose_offset_would_overflow_sqlite_is_refused(page: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter) as refused:
        page_params({"page": page, "per_page": "100"})
    assert refused.value.status == 400
    assert (MAX_PAGE - 1) * MAX_PER_PAGE <= MAX_ID  # the largest page taken does fit
    store = QuizLogStore(tmp_path / "q.sqlite3")
    store.open()
    try:  # ... and SQLite really takes its offset
        assert store.page(SUB, 1, (MAX_PAGE - 1) * MAX_PER_PAGE, MAX_PER_PAGE) == (0, [])
    finally:
        store.close()


def test_an_attempt_beyond_64_bits_is_not_found() -> None:
    for attempt in ("99999999999999999999", "٣", "9" * 5000):
        with pytest.raises(NotFound):
            requested_attempt(attempt, 3)


@pytest.mark.parametrize("name", ["course_id", "quiz_id", "id"])
def test_a_path_id_beyond_64_bits_names_nothing(name: str) -> None:
    ids = {"course_id": "101", "quiz_id": "202", "id": "303"}
    check_path_ids({**ids, name: str(MAX_ID)})
    check_path_ids({**ids, name: "sis_course_id:" + "9" * 30})  # opaque: not a number
    with pytest.raises(NotFound):
        check_path_ids({**ids, name: str(MAX_ID + 1)})
    with pytest.raises(NotFound):
        check_path_ids({**ids, name: "1" * 23})


def test_canvas_ids_are_numbers_only_when_json_and_canvas_would_write_them_so() -> None:
    assert canvas_id(str(MAX_ID)) == MAX_ID
    assert canvas_id("1" * 23) == "1" * 23  # never an integer JSON cannot carry
    assert canvas_id("٣") == "٣"
    assert canvas_id("²") == "²"  # isdigit() is True and int() raises: no 500


@pytest.mark.parametrize(
    ("public_url", "listen", "request_base", "expected"),
    [
        # A configured public URL wins, whatever the request claims.
        ("https://gw.example.edu", WILDCARD, "http://evil.example", "https://gw.example.edu"),
        ("https://lms.example.edu/gw/", "127.0.0.1", "http://x", "https://lms.example.edu/gw"),
        # Without one: the request's scheme and port when it addressed the listen host...
        ("", "127.0.0.1", "http://127.0.0.1:8123", "http://127.0.0.1:8123"),
        ("", "localhost", "http://LOCALHOST:8123", "http://localhost:8123"),
        ("", "::1", "http://[::1]:8123", "http://[::1]:8123"),
        ("", "127.0.0.1", "http://127.0.0.1", "http://127.0.0.1"),
        # ...else relative links: never a host the request made up.
        ("", "127.0.0.1", "http://evil.example", ""),
        ("", "127.0.0.1", "http://evil.example:8123", ""),
        ("", "127.0.0.1", "http://127.0.0.1:1@evil.example", ""),
        ("", "127.0.0.1", "http://127.0.0.1/evil", ""),
        ("", "127.0.0.1", "http://127.0.0.1:8123?x=1", ""),
        ("", "127.0.0.1", "http://127.0.0.1:notaport", ""),
        ("", "127.0.0.1", "javascript://127.0.0.1", ""),
        ("", WILDCARD, "http://0.0.0.0:8080", ""),  # a wildcard names no host to link to
        ("", "127.0.0.1", "", ""),
    ],
)
def test_link_base(public_url: str, listen: str, request_base: str, expected: str) -> None:
    assert link_base(public_url, listen, request_base) == expected


def test_relative_links_are_uri_references_to_the_same_route() -> None:
    link = link_header(
        "",
        "/api/v1/courses/1/quizzes/2/submissions/3/events",
        attempt=1,
        per_page=2,
        page=1,
        total=3,
    )
    assert (
        '</api/v1/courses/1/quizzes/2/submissions/3/events?attempt=1&page=2&per_page=2>; rel="next"'
        in link
    )
