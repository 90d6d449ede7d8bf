"""Canvas's quiz log: the read model behind `GET .../submissions/{id}/events`, and the three
GETs canvasapi walks through to reach a quiz submission.

A topic follower (gateway/kafka/follower.py) reads the canonical topic (every partition, so it
sees what every gateway instance published), keeps the Canvas records and stores them in SQLite
under `server.state_dir`, with the consumed offsets in the same transaction: a restart resumes
exactly where the last committed batch ended, and rows are idempotent by canonical record id (a
record that reaches Kafka twice is stored once).

Every number a GET reads from its path or query is bounded before it reaches SQLite or a JSON
answer (64 bits both): a page beyond that is a 400, an id no Canvas id can be a 404, in Canvas's
error format like every other error of these routes. Pagination links are built from
`server.public_url`, never from the `Host` a request claims (see `link_base`).

A GET right after a 204 must see its events. The POST's records were acknowledged by Kafka
before the 204, so the topic's end offsets already cover them: a GET waits (at most
`canvas.quiz_log_wait_seconds`) until the follower has stored everything before them. This also
holds when the POST went to another gateway instance, which an `accepted` hook could not see.
The follower writes through a SQLite connection of its own, on its own thread.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import orjson
import structlog

from gateway.errors import InvalidParameter, NotFound
from gateway.kafka.follower import TopicFollower
from gateway.settings import Settings
from gateway.sqlite_store import SqliteStore
from gateway.vendors.base import ExtraRoute, Inbound, Item, Reply
from gateway.vendors.canvas import normalize as canvas
from gateway.vendors.canvas.settings import CanvasSettings

FILE_NAME: Final = "canvas-quiz-log.sqlite3"
API: Final = "/api/v1"
COURSE_PATH: Final = API + "/courses/{course_id}"
QUIZ_PATH: Final = COURSE_PATH + "/quizzes/{quiz_id}"
SUBMISSION_PATH: Final = QUIZ_PATH + "/submissions/{id}"
# Canvas's pagination (Api.paginate): 10 per page unless asked, never more than 100.
DEFAULT_PER_PAGE: Final = 10
MAX_PER_PAGE: Final = 100
# The last page whose SQLite OFFSET, (page - 1) * per_page, is still a 64-bit integer.
MAX_PAGE: Final = canvas.MAX_ID // MAX_PER_PAGE
# Listen addresses that name no host a client could use in a link.
_WILDCARD_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})  # noqa: S104  # compared, not bound
# The event Canvas records when a quiz submission gets a new attempt.
ATTEMPT_START: Final = "submission_created"
# Cheap pre-filter: canonical records are compact orjson, so a Canvas record holds this.
_CANVAS_MARK: Final = b'"vendor":"canvas"'
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- consumption order: ties of created_at
    record_id TEXT NOT NULL UNIQUE,         -- the canonical id, also the event's id on GET
    tenant TEXT NOT NULL,
    course_id TEXT NOT NULL,
    quiz_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    event_type TEXT NOT NULL,
    event_data TEXT,                        -- JSON as sent; NULL when none or lost
    created_at TEXT NOT NULL                -- receivedat of the canonical record
);
CREATE INDEX IF NOT EXISTS events_by_attempt
    ON events (tenant, course_id, quiz_id, submission_id, attempt, created_at, seq);
CREATE TABLE IF NOT EXISTS submissions (
    tenant TEXT NOT NULL,
    course_id TEXT NOT NULL,
    quiz_id TEXT NOT NULL,
    submission_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,               -- the latest attempt
    started INTEGER NOT NULL,               -- 1 once the latest attempt had its ATTEMPT_START
    PRIMARY KEY (tenant, course_id, quiz_id, submission_id)
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
"""

_COUNT: Final = (
    "SELECT count(*) FROM events WHERE tenant = ? AND course_id = ? AND quiz_id = ?"
    " AND submission_id = ? AND attempt = ?"
)
_PAGE: Final = (
    "SELECT record_id, event_type, event_data, created_at FROM events WHERE tenant = ?"
    " AND course_id = ? AND quiz_id = ? AND submission_id = ? AND attempt = ?"
    " ORDER BY created_at, seq LIMIT ? OFFSET ?"
)

log = structlog.get_logger("gateway.canvas")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Submission:
    """One quiz submission of one tenant, as the URL names it."""

    tenant: str
    course_id: str
    quiz_id: str
    submission_id: str


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A quiz submission event as the quiz log keeps it."""

    record_id: str
    submission: Submission
    event_type: str
    event_data: str | None  # JSON text
    created_at: str  # canonical receivedat


def logged_event(record: Any) -> LoggedEvent | None:
    """The quiz-log row of a canonical record; None for records of other vendors."""
    if not isinstance(record, dict) or record.get("vendor") != canvas.NAME:
        return None
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    vendor = data.get("vendor") or {}
    ids = [_ref_id(data.get(name)) for name in ("course", "assessment", "attempt")]
    fields = (record.get("id"), record.get("tenant"), vendor.get("event_type"))
    created_at = record.get("receivedat")
    if not isinstance(created_at, str) or not all(
        isinstance(v, str) and v for v in (*ids, *fields)
    ):
        return None
    event_data = vendor.get("event_data")
    return LoggedEvent(
        record_id=record["id"],
        submission=Submission(record["tenant"], *ids),
        event_type=vendor["event_type"],
        event_data=None if event_data is None else orjson.dumps(event_data).decode(),
        created_at=created_at,
    )


def _ref_id(ref: Any) -> str:
    value = ref.get("id") if isinstance(ref, dict) else None
    return value if isinstance(value, str) else ""


class QuizLogStore(SqliteStore):
    """The SQLite read model. Synchronous: every call runs on the component's one DB thread."""

    _what = "the quiz log store"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE), so that the worker
        # processes of one instance sharing the file serialize their writes.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 10000")
        _wal(db)
        # NORMAL in WAL mode keeps the file consistent on a crash; the last transactions may be
        # lost, and their offsets with them, so they are consumed again.
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    def forget_offsets(self, topic: str, partitions: Sequence[int]) -> None:
        """Drop stored offsets (of a topic that is no longer the one they were read from)."""
        rows = [(topic, p) for p in partitions]
        self.db.executemany("DELETE FROM offsets WHERE topic = ? AND partition = ?", rows)

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to consume, per partition, as last committed."""
        rows = self.db.execute(
            "SELECT partition, next_offset FROM offsets WHERE topic = ?", (topic,)
        )
        return {int(p): int(o) for p, o in rows}

    def apply(self, topic: str, events: Sequence[LoggedEvent], positions: Mapping[int, int]) -> int:
        """Store new events and the offsets they were consumed up to, in one transaction.

        Events already stored (same canonical id) are skipped. Returns how many were new.
        """
        db = self.db
        added = 0
        db.execute("BEGIN IMMEDIATE")
        try:
            for event in events:
                if db.execute(
                    "SELECT 1 FROM events WHERE record_id = ?", (event.record_id,)
                ).fetchone():
                    continue
                attempt = self._attempt_for(event)
                db.execute(
                    "INSERT INTO events (record_id, tenant, course_id, quiz_id, submission_id,"
                    " attempt, event_type, event_data, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        event.record_id,
                        *_key(event.submission),
                        attempt,
                        event.event_type,
                        event.event_data,
                        event.created_at,
                    ),
                )
                added += 1
            for partition, offset in positions.items():
                # Worker processes sharing the file each consume the topic: keep the furthest.
                db.execute(
                    "INSERT INTO offsets (topic, partition, next_offset) VALUES (?, ?, ?)"
                    " ON CONFLICT (topic, partition)"
                    " DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                    (topic, partition, offset),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return added

    def _attempt_for(self, event: LoggedEvent) -> int:
        """The attempt an event belongs to. The POST names none (Canvas uses the submission's
        current attempt), so attempts are counted here: events belong to the latest attempt,
        attempt 1 at first, and a `submission_created` event (Canvas records one when an attempt
        begins) starts a new attempt once the latest one has had its own."""
        key = _key(event.submission)
        row = self.db.execute(
            "SELECT attempt, started FROM submissions"
            " WHERE tenant = ? AND course_id = ? AND quiz_id = ? AND submission_id = ?",
            key,
        ).fetchone()
        attempt, started = (int(row[0]), bool(row[1])) if row else (1, False)
        if event.event_type == ATTEMPT_START:
            if started:
                attempt += 1
            started = True
        self.db.execute(
            "INSERT INTO submissions (tenant, course_id, quiz_id, submission_id, attempt, started)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, course_id, quiz_id, submission_id)"
            " DO UPDATE SET attempt = excluded.attempt, started = excluded.started",
            (*key, attempt, int(started)),
        )
        return attempt

    def latest_attempt(self, submission: Submission) -> int:
        """The submission's latest attempt; 1 when nothing is known of it yet (the attempt its
        first events will be recorded in)."""
        row = self.db.execute(
            "SELECT attempt FROM submissions"
            " WHERE tenant = ? AND course_id = ? AND quiz_id = ? AND submission_id = ?",
            _key(submission),
        ).fetchone()
        return int(row[0]) if row else 1

    def page(
        self, submission: Submission, attempt: int, offset: int, limit: int
    ) -> tuple[int, list[tuple[str, str, str | None, str]]]:
        """How many events the attempt has, and one page of them in Canvas's order (receive
        time, then consumption order): (record_id, event_type, event_data, created_at)."""
        params = (*_key(submission), attempt)
        (total,) = self.db.execute(_COUNT, params).fetchone()
        rows = self.db.execute(_PAGE, (*params, limit, offset)).fetchall()
        return int(total), [(str(a), str(b), c, str(d)) for a, b, c, d in rows]


def _key(submission: Submission) -> tuple[str, str, str, str]:
    return (submission.tenant, submission.course_id, submission.quiz_id, submission.submission_id)


def page_params(query: Mapping[str, str]) -> tuple[int, int]:
    """`per_page` (default 10, at most 100; Canvas clamps rather than refuses) and `page`.

    A value that is no number in ASCII digits is ignored (the default), as before for `x`;
    a page past MAX_PAGE is refused (InvalidParameter): its offset would not fit SQLite.
    """
    per_page = _int(query.get("per_page"))
    if per_page is None or per_page < 1:
        per_page = DEFAULT_PER_PAGE
    page = _int(query.get("page"))
    if page is not None and page > MAX_PAGE:
        raise InvalidParameter(f"page must be a whole number from 1 to {MAX_PAGE}")
    return min(per_page, MAX_PER_PAGE), page if page is not None and page >= 1 else 1


def requested_attempt(value: str | None, latest: int) -> int:
    """The attempt asked for (default: the latest); raises NotFound for one that is unknown."""
    if value is None or value == "":
        return latest
    attempt = _int(value)
    if attempt is None or not 1 <= attempt <= latest:
        raise NotFound(f"no attempt {value!r} of this quiz submission")
    return attempt


def _int(value: str | None) -> int | None:
    """ASCII digits only: `int` would also read "٣" (U+0663) as 3."""
    return None if value is None else canvas.ascii_number(value)


def events_path(submission: Submission) -> str:
    """The quiz log's path, with the ids as the URL gave them (re-encoded)."""
    ids = (submission.course_id, submission.quiz_id, submission.submission_id)
    course, quiz, sub = (quote(i, safe=":") for i in ids)
    return f"{API}/courses/{course}/quizzes/{quiz}/submissions/{sub}/events"


def link_base(public_url: str, listen_host: str, request_base: str) -> str:
    """What pagination links start with: `server.public_url` when configured; else the scheme,
    host and port of the request only when its host is the configured listen host; else ""
    (relative links).

    Not the request's `Host` as such: its sender chooses it, and links naming another host send
    whoever follows them (and their token) there. canvasapi needs absolute links that start with
    its own base URL (its PaginatedList cuts that base off with a regex, and crashes on anything
    else, relative links included), so a gateway behind a proxy or listening on a wildcard
    address must be told its `public_url`. Without it, a request that addressed the configured
    `server.host` gets absolute links to that host: the port is the request's, because
    `gateway serve --port` may listen elsewhere than `server.port`, and the app cannot tell;
    the request can then at most name another port of the gateway's own address.
    """
    if public_url:
        return public_url.rstrip("/")
    host = listen_host.strip("[]").lower()
    if host in _WILDCARD_HOSTS:
        return ""
    try:
        parts = urlsplit(request_base)
        port = parts.port  # ValueError: a port that is no port
    except ValueError:
        return ""
    if (
        parts.scheme not in ("http", "https")
        or parts.hostname != host
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")  # a Host with a path, or a root path: not ours to repeat
        or parts.query
        or parts.fragment
    ):
        return ""
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + ("" if port is None else f":{port}")


def link_header(
    base_url: str, path: str, *, attempt: int, per_page: int, page: int, total: int
) -> str:
    """Canvas's pagination links (`base_url` from `link_base`: "" makes them relative, which
    RFC 8288 allows), keeping `attempt` and `per_page`."""
    last = max(1, math.ceil(total / per_page))
    rels = [("current", page)]
    if page < last:
        rels.append(("next", page + 1))
    if page > 1:
        rels.append(("prev", page - 1))
    rels += [("first", 1), ("last", last)]
    return ",".join(
        f'<{base_url}{path}?attempt={attempt}&page={n}&per_page={per_page}>; rel="{rel}"'
        for rel, n in rels
    )


def canvas_time(received_at: str) -> str:
    """`2026-01-01T12:00:00.123Z` -> `2026-01-01T12:00:00Z`, Canvas's `created_at` format."""
    return received_at[:19] + "Z"


def canvas_id(value: str) -> int | str:
    """Canvas answers ids as integers; opaque ones (`sis_course_id:...`) stay strings, and so
    does anything that is not a 64-bit number in plain ASCII digits (JSON could not carry it,
    and "٣" or "007" are not how Canvas writes a number)."""
    number = canvas.ascii_number(value)
    if number is None or number > canvas.MAX_ID or str(number) != value:
        return value
    return number


def _json(body: Any) -> Reply:
    return Reply(200, orjson.dumps(body), "application/json")


class CanvasQuizLog:
    """The quiz log component: topic follower, SQLite store and the Canvas GET routes."""

    vendor = canvas.NAME

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._canvas = settings.section(CanvasSettings)
        path = self._canvas.quiz_log_path or str(Path(settings.server.state_dir) / FILE_NAME)
        self.store = QuizLogStore(Path(path))
        self._executor: ThreadPoolExecutor | None = None
        self._follower = TopicFollower(
            settings.kafka,
            settings.kafka.canonical_topic,
            name="quiz_log",
            client="canvas-quiz-log",
            parse=_event_of,
            # The follower's thread writes through a connection of its own.
            store=lambda: QuizLogStore(self.store.path),
        )

    async def start(self) -> None:
        server = self._settings.server
        if not server.public_url and server.host.strip("[]") in _WILDCARD_HOSTS:
            # A wildcard listen address names no host for links: they will be relative, which
            # canvasapi cannot follow past the first page.
            log.warning("canvas_links_relative", hint="set server.public_url")
        # One thread owns the SQLite connection of the GETs: no call blocks the event loop,
        # none overlaps.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="canvas-quiz-log")
        await self._db(self.store.open)
        self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()
        if self._executor is not None:
            await self._db(self.store.close)
            self._executor.shutdown()
            self._executor = None

    def routes(self) -> Sequence[ExtraRoute]:
        return (
            ExtraRoute(self.vendor, canvas.PATH, "GET", self.events),
            ExtraRoute(self.vendor, SUBMISSION_PATH, "GET", self.submission),
            ExtraRoute(self.vendor, QUIZ_PATH, "GET", self.quiz),
            ExtraRoute(self.vendor, COURSE_PATH, "GET", self.course),
        )

    async def accepted(self, tenant: str, items: Sequence[Item], request_id: str) -> None:
        """Nothing to do: GETs wait for the follower instead (see the module docstring)."""

    async def _db(self, call: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the quiz log is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call, *args)

    async def caught_up(self) -> bool:
        """Wait (bounded) until the store holds every record before the topic's end offsets."""
        return await self._follower.caught_up(self._canvas.quiz_log_wait_seconds)

    # --- the routes -------------------------------------------------------------------------

    async def events(self, inbound: Inbound, tenant: str) -> Reply:
        """`GET .../submissions/{id}/events`: one page of an attempt's events, Canvas's way."""
        submission = _submission(inbound, tenant)
        per_page, page = page_params(inbound.query)  # a bad page is refused before any wait
        await self.caught_up()
        latest = await self._db(self.store.latest_attempt, submission)
        attempt = requested_attempt(inbound.query.get("attempt"), latest)
        total, rows = await self._db(
            self.store.page, submission, attempt, (page - 1) * per_page, per_page
        )
        events = [
            {
                "id": record_id,
                "event_type": event_type,
                "event_data": orjson.Fragment(event_data) if event_data is not None else None,
                "created_at": canvas_time(created_at),
            }
            for record_id, event_type, event_data, created_at in rows
        ]
        server = self._settings.server
        link = link_header(
            link_base(server.public_url, server.host, inbound.base_url),
            events_path(submission),
            attempt=attempt,
            per_page=per_page,
            page=page,
            total=total,
        )
        body = orjson.dumps({"quiz_submission_events": events})
        return Reply(200, body, "application/json", {"link": link})

    async def submission(self, inbound: Inbound, tenant: str) -> Reply:
        """`GET .../quizzes/{q}/submissions/{s}`: what canvasapi's get_quiz_submission needs.

        The gateway is not the LMS: it answers for any id, with the latest attempt its log
        knows (1 before any event) and nulls for what it cannot know.
        """
        submission = _submission(inbound, tenant)
        await self.caught_up()
        attempt = await self._db(self.store.latest_attempt, submission)
        quiz_submission = {
            "id": canvas_id(submission.submission_id),
            "quiz_id": canvas_id(submission.quiz_id),
            "attempt": attempt,
            "user_id": None,  # unknown: the POST does not say whose submission it is
        }
        return _json({"quiz_submissions": [quiz_submission]})

    async def quiz(self, inbound: Inbound, tenant: str) -> Reply:
        """`GET .../quizzes/{q}`: a minimal quiz (title unknown), so canvasapi can go on."""
        del tenant
        canvas.check_path_ids(inbound.path_params)
        quiz_id = inbound.path_params["quiz_id"]
        return _json({"id": canvas_id(quiz_id), "title": None})

    async def course(self, inbound: Inbound, tenant: str) -> Reply:
        """`GET /api/v1/courses/{c}`: a minimal course (name unknown), so canvasapi can go on."""
        del tenant
        canvas.check_path_ids(inbound.path_params)
        course_id = inbound.path_params["course_id"]
        return _json({"id": canvas_id(course_id), "name": None, "course_code": None})


def _event_of(value: bytes | None) -> LoggedEvent | None:
    if not value or _CANVAS_MARK not in value:
        return None
    try:
        return logged_event(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None


def _submission(inbound: Inbound, tenant: str) -> Submission:
    params = inbound.path_params
    canvas.check_path_ids(params)  # NotFound: an id beyond 64 bits names nothing
    return Submission(tenant, params["course_id"], params["quiz_id"], params["id"])


def _wal(db: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL, waiting for another worker that opens the same new file at that moment:
    SQLite answers "database is locked" at once there, without its busy timeout (seen once in
    about 20 starts of two workers on a new state directory)."""
    for attempt in range(attempts):
        try:
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.1)
        else:
            return
