"""Canvas LMS quiz submission events (`Quizzes::QuizSubmissionEventsApiController#create`).

Contract (docs/vendors/canvas.md#contract): `POST /api/v1/courses/{course_id}/quizzes/{quiz_id}/
submissions/{id}/events` with `quiz_submission_events` in one of three encodings: JSON (the
Canvas browser), a Rack-nested form (`quiz_submission_events[][event_type]=...`), or the flat form
`quiz_submission_events[]=<type>` that canvasapi 3.x really sends (its `submit_events` keeps only
each event's type). Bearer token or Canvas's `access_token` parameter; exactly 204 with an empty
body on success, a missing array included; errors as Canvas renders them
(`{"errors":[{"message":...}]}`). Canvas validates nothing: unknown event types are published as
`edu.activity.generic`. The quiz log (GET) is served by `gateway.vendors.canvas.quiz_log`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from gateway.auth import FORM
from gateway.canonical import (
    CanonicalEvent,
    EventType,
    NormalizeContext,
    compact,
    format_time,
    normalize_time,
)
from gateway.errors import (
    GatewayError,
    MalformedPayload,
    NormalizeError,
    NotFound,
    RackParameterError,
    Unauthorized,
    UnsafePayload,
    UnsupportedMediaType,
)
from gateway.limits import MAX_FORM_FIELDS, InvalidJson, loads_json
from gateway.vendors.base import Inbound, Item, Reply

NAME: Final = "canvas"
PATH: Final = "/api/v1/courses/{course_id}/quizzes/{quiz_id}/submissions/{id}/events"
EVENTS_KEY: Final = "quiz_submission_events"
BATCH_SCHEMA: Final = "batch"
EVENT_SCHEMA: Final = "event"
FLAT_EVENT_SCHEMA: Final = "flatEvent"
# How each element arrived: a JSON object, a Rack-nested form hash (string leaves), or a bare
# event type (canvasapi's flat form, or a string element in JSON): its data is lost.
JSON, FORM_ENCODED, FLAT = "json", "form", "flat"

# Rack's default `param_depth_limit` (Rack 3): deeper keys are refused, as Rack refuses them.
RACK_DEPTH_LIMIT: Final = 32
# What Canvas answers (`render_error`, `render_unauthorized_action`); canvasapi raises
# InvalidAccessToken only when a 401 carries WWW-Authenticate.
INVALID_TOKEN: Final = "Invalid access token."  # noqa: S105  # a message, not a secret
NOT_FOUND: Final = "The specified resource does not exist."
WWW_AUTHENTICATE: Final = 'Bearer realm="canvas-lms"'
# Canvas's ids are 64-bit integers (or opaque strings such as `sis_course_id:...`); SQLite's
# integers are 64-bit too. A number beyond this names nothing Canvas could have.
MAX_ID: Final = 2**63 - 1
PATH_IDS: Final = ("course_id", "quiz_id", "id")

_TYPES: Final = {
    "session_started": EventType.SESSION_STARTED,
    "page_focused": EventType.SESSION_FOCUS_GAINED,
    "page_blurred": EventType.SESSION_FOCUS_LOST,
    "question_viewed": EventType.ITEM_VIEWED,
    "question_flagged": EventType.ITEM_FLAGGED,
    "question_answered": EventType.ITEM_ANSWERED,
    "submission_created": EventType.ATTEMPT_STARTED,
}
# `question_flagged` names its question in three spellings across Canvas's front end and docs.
_QUESTION_KEYS: Final = ("questionId", "question_id", "quiz_question_id")
# Rails' boolean casting (ActiveModel::Type::Boolean), which is how Canvas reads form leaves.
_TRUE: Final = frozenset({"true", "1", "t", "on", "yes"})
_FALSE: Final = frozenset({"false", "0", "f", "off", "no"})
_RACK_KEY: Final = re.compile(r"\A[\[\]]*([^\[\]]+)\]*")
_RACK_ARRAY_OF_HASH: Final = re.compile(r"\A\[\]\[([^\[\]]+)\]\Z")
_RACK_ARRAY_REST: Final = re.compile(r"\A\[\](.+)\Z", re.DOTALL)
_RACK_KEY_PARTS: Final = re.compile(r"[\[\]]+")
_WORD_START: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def parse_rack_form(body: bytes, depth_limit: int = RACK_DEPTH_LIMIT) -> dict[str, Any]:
    """An url-encoded body as Rack's `parse_nested_query` reads it (Rails `params`).

    `a[b]=1` is a hash, `a[]=1` an array, `a[][b]=1&a[][c]=2` one hash in an array, and a key
    that the last hash of such an array already has starts a new element. Leaves are strings.
    """
    try:
        pairs = parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except UnicodeDecodeError:
        raise MalformedPayload("the form body is not UTF-8") from None
    except ValueError:  # parse_qsl's "Max number of fields exceeded"
        raise UnsafePayload(f"the form has more than {MAX_FORM_FIELDS} fields") from None
    params: dict[str, Any] = {}
    for name, value in pairs:
        _rack_normalize(params, name, value, depth_limit)
    return params


def _rack_normalize(params: dict[str, Any], name: str, value: Any, depth: int) -> Any:
    """Rack's `normalize_params`, step for step (so that edge cases match what Canvas sees)."""
    if depth <= 0:
        raise RackParameterError(f"the form key {name!r} is nested too deeply")
    match = _RACK_KEY.match(name)
    if match is None:  # a key of brackets only: Rack ignores it
        return None
    key, after = match.group(1), name[match.end() :]
    if after == "":
        params[key] = value
    elif after == "[":
        params[name] = value
    elif after == "[]":
        _array_at(params, key, name).append(value)
    elif (found := _RACK_ARRAY_OF_HASH.match(after) or _RACK_ARRAY_REST.match(after)) is not None:
        child = found.group(1)
        array = _array_at(params, key, name)
        last = array[-1] if array else None
        if isinstance(last, dict) and not _rack_has_key(last, child):
            _rack_normalize(last, child, value, depth - 1)
        else:
            array.append(_rack_normalize({}, child, value, depth - 1))
    else:
        nested = params.setdefault(key, {})
        if not isinstance(nested, dict):
            raise RackParameterError(f"the form key {name!r} expects {key!r} to be a hash")
        params[key] = _rack_normalize(nested, after, value, depth - 1)
    return params


def _array_at(params: dict[str, Any], key: str, name: str) -> list[Any]:
    array = params.setdefault(key, [])
    if not isinstance(array, list):
        raise RackParameterError(f"the form key {name!r} expects {key!r} to be an array")
    return array


def _rack_has_key(params: dict[str, Any], key: str) -> bool:
    """True when `params` already holds the nested `key` (`[a][b]`): Rack's new-element rule."""
    if "[]" in key:
        return False
    current: Any = params
    for part in _RACK_KEY_PARTS.split(key):
        if part == "":
            continue
        if not isinstance(current, dict) or part not in current:
            return False
        current = current[part]
    return True


def ascii_number(value: str) -> int | None:
    """`value` as a whole number when it is one in ASCII digits (surrounding blanks allowed),
    else None. `str.isdigit` and `int` also take other scripts' digits ("٣" is 3 to them, not to
    Canvas); a number of more than 19 significant digits is returned as MAX_ID + 1, never parsed
    (`int` of thousands of digits costs quadratic time, then raises)."""
    digits = value.strip(" \t")
    if not digits or not digits.isascii() or not digits.isdigit():
        return None
    significant = digits.lstrip("0")  # leading zeros count towards int()'s digit limit too
    return MAX_ID + 1 if len(significant) > 19 else int(significant or "0")


def check_path_ids(path_params: Mapping[str, str]) -> None:
    """Raise NotFound for a path id that is a number no Canvas id can be (more than 64 bits):
    Canvas answers 404 for it, and the quiz log could not serve it back (ids are numbers on GET)."""
    for name in PATH_IDS:
        number = ascii_number(path_params.get(name, ""))
        if number is not None and number > MAX_ID:
            raise NotFound(f"the {name} in the path is larger than any Canvas id")


def decode(inbound: Inbound) -> dict[str, Any]:
    """The batch: the path's ids, the encoding and the events array (empty when absent)."""
    check_path_ids(inbound.path_params)
    media, body = inbound.media_type, inbound.body
    if media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    ):
        params, encoding = _json_object(body), JSON
    elif media == FORM:
        params, encoding = parse_rack_form(body), FORM_ENCODED
    elif media == "" and not body.strip():
        params, encoding = {}, FORM_ENCODED  # a bare POST: Canvas answers 204, so do we
    else:
        raise UnsupportedMediaType(
            "quiz submission events are application/json or "
            f"application/x-www-form-urlencoded, not {media or 'none'!r}"
        )
    events = params.get(EVENTS_KEY)
    if events is None:
        events = []  # Canvas: `params[:quiz_submission_events]&.each`, then 204
    elif isinstance(events, dict) and events and all(k.isdigit() for k in events):
        # jQuery's `$.param` writes arrays of objects with indexes (`a[0][b]`): an array.
        events = [events[k] for k in sorted(events, key=int)]
    return {
        "course_id": inbound.path_params.get("course_id", ""),
        "quiz_id": inbound.path_params.get("quiz_id", ""),
        "submission_id": inbound.path_params.get("id", ""),
        "encoding": encoding,
        EVENTS_KEY: events,
    }


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        parsed = loads_json(body)
    except InvalidJson as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise MalformedPayload(f'expected a JSON object {{"{EVENTS_KEY}": [...]}}')
    return parsed


def split(batch: dict[str, Any]) -> Sequence[Item]:
    """One item per element of `quiz_submission_events`."""
    items = []
    for index, element in enumerate(batch[EVENTS_KEY]):
        flat = isinstance(element, str)
        meta = {
            "course_id": batch["course_id"],
            "quiz_id": batch["quiz_id"],
            "submission_id": batch["submission_id"],
            "encoding": FLAT if flat else batch["encoding"],
            "index": index,
        }
        items.append(
            Item(
                payload=element,
                schema=FLAT_EVENT_SCHEMA if flat else EVENT_SCHEMA,
                where=f"/{EVENTS_KEY}/{index}",
                identity=content_identity(meta, element),
                meta=meta,
            )
        )
    return items


def submission_path(meta: Any) -> str:
    """`courses/<c>/quizzes/<q>/submissions/<s>`: the quiz submission an event belongs to."""
    return (
        f"courses/{meta['course_id']}/quizzes/{meta['quiz_id']}/submissions/{meta['submission_id']}"
    )


def content_identity(meta: Any, element: Any) -> str | None:
    """The identity of an event that carries its own moment: submission, type, client time.

    The pipeline adds the digest of the whole element (event_data included) to the record id,
    so a browser's re-send of a batch makes the same ids. Events without a client_timestamp
    (every flat-form event) have no identity of their own: see `request_identity`.
    """
    if not isinstance(element, dict):
        return None
    stamp = element.get("client_timestamp")
    if stamp is None or stamp == "" or isinstance(stamp, dict | list):
        return None
    event_type = element.get("event_type")
    return f"{submission_path(meta)}/events/{event_type}@{stamp}"


def request_identity(meta: Any, ctx: NormalizeContext) -> str:
    """An event with no moment of its own is identified by its request and position in it.

    Two `page_blurred` events without timestamps are indistinguishable from a re-send, so
    content cannot tell them apart: dropping one would lose data. The request id is the
    sender's `X-Request-Id` when it gives one (a sender that re-sends with the same header is
    deduplicated), else a fresh id per request (no deduplication across requests).
    """
    request = ctx.delivery_id or format_time(ctx.received_at)
    return f"{submission_path(meta)}/requests/{request}/{meta['index']}"


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """The canonical record of one quiz submission event."""
    meta = item.meta
    flat = item.schema == FLAT_EVENT_SCHEMA
    payload: Any = item.payload
    event_type: str = payload if flat else payload["event_type"]
    stamp = None if flat else payload.get("client_timestamp")
    event_data = None if flat else payload.get("event_data")
    question_ids = _question_ids(event_type, event_data)
    question: dict[str, Any] | None = None
    if len(question_ids) == 1:
        question = {"id": question_ids[0], "type": "QuizQuestion"}
        if event_type == "question_flagged" and isinstance(event_data, dict):
            flagged = _boolean(event_data.get("flagged"))
            if flagged is not None:
                question["flagged"] = flagged
    vendor = compact(
        {
            "name": NAME,
            "event_type": event_type,
            "encoding": meta["encoding"],
            "client_timestamp": stamp,
            "event_data": event_data,
            # canvasapi's submit_events sends only the types: data and client time are lost.
            "data_lost": True if flat else None,
            # Every question of a view or an answer batch (data.item names it when only one).
            "question_ids": (question_ids or None) if event_type != "question_flagged" else None,
        }
    )
    data = compact(
        {
            "action": _verb(event_type),
            "assessment": {"id": meta["quiz_id"], "type": "Quiz"},
            "attempt": {"id": meta["submission_id"], "type": "QuizSubmission"},
            "course": {"id": meta["course_id"], "type": "Course"},
            "item": question,
            "vendor": vendor,
        }
    )
    time = _client_time(stamp) or format_time(ctx.received_at)
    identity = item.identity or request_identity(meta, ctx)
    kind = _TYPES.get(event_type, EventType.ACTIVITY)
    return [CanonicalEvent(kind, time, identity, data, meta["submission_id"])]


def _question_ids(event_type: str, event_data: Any) -> list[str]:
    """The questions an event is about, as strings (JSON sends numbers, forms strings)."""
    if event_type == "question_viewed":
        values = event_data if isinstance(event_data, list) else [event_data]
        return [_id(v) for v in values if _id(v)]
    if event_type == "question_flagged" and isinstance(event_data, dict):
        ids = [_id(event_data.get(key)) for key in _QUESTION_KEYS]
        return [next(i for i in ids if i)] if any(ids) else []
    if event_type == "question_answered":
        answers = event_data if isinstance(event_data, list) else [event_data]
        found = []
        for answer in answers:
            if isinstance(answer, dict):
                ids = [_id(answer.get(key)) for key in ("quiz_question_id", "question_id")]
                if any(ids):
                    found.append(next(i for i in ids if i))
        return found
    return []


def _id(value: Any) -> str:
    """A question id as a string; "" when the value is no id at all."""
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return ""


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


def _client_time(stamp: Any) -> str | None:
    """The client's timestamp in the canonical format; None when absent or unreadable (the
    event is kept, timed by its receipt: a browser's odd clock must not cost the event)."""
    if not isinstance(stamp, str) or not stamp.strip():
        return None
    try:
        return normalize_time(stamp)
    except NormalizeError:
        return None


def _verb(event_type: str) -> str:
    """Canvas's event types are snake_case already; others are brought to it."""
    return _WORD_START.sub("_", event_type.strip()).lower() or event_type


def render_error(error: GatewayError) -> Reply:
    """Errors as Canvas renders them: `{"errors": [{"message": ...}]}`."""
    headers: dict[str, str] = {}
    if isinstance(error, Unauthorized):
        errors = [{"message": INVALID_TOKEN}]
        headers["www-authenticate"] = WWW_AUTHENTICATE
    elif isinstance(error, NotFound):
        errors = [{"message": NOT_FOUND}]
    else:
        errors = [{"message": error.message}]
        errors.extend({"message": e.message, "pointer": e.path} for e in error.errors)
    return Reply(error.status, orjson.dumps({"errors": errors}), "application/json", headers)
