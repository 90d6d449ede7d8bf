"""Inspera Assessment: webhooks and the test-events export file.

Contract (docs/vendors/inspera.md#contract): JSON webhooks signed with `X-Inspera-Signature` (hex
HMAC-SHA1 of the raw body), answered 200 within 10 s; anything else is retried 3 times. The
payload is thin (`{contextObjectId, event, timestamp}`); `event_by_candidates_export_finished`
also names a pre-signed URL of the test-events export, which `gateway.vendors.inspera.exports`
downloads in the background and feeds back through `export_items` and `ExportParser` here.

Pure: no I/O. Pre-signed URLs are bearer secrets: `split` moves every URL of a webhook out of the
payload (into `Item.meta`, which is never published) and export events lose their attachments'
URLs, so that neither canonical records, dead letters nor `original` ever carry one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import ijson

from gateway.canonical import (
    CanonicalEvent,
    EventType,
    NormalizeContext,
    compact,
    format_time,
    normalize_time,
)
from gateway.errors import MalformedPayload, UnsupportedMediaType
from gateway.limits import InvalidJson, loads_json
from gateway.vendors.base import Inbound, Item

NAME: Final = "inspera"
EXPORT_FINISHED: Final = "event_by_candidates_export_finished"
# Events whose contextObjectId is a test (Inspera's KB: "contextObjectId ... refers to a test").
TEST_EVENTS: Final = frozenset(
    {EXPORT_FINISHED, "submissions_export_finished", "confirm_final_grades"}
)
WEBHOOK_SCHEMA: Final = "webhook"
EXPORT_EVENT_SCHEMA: Final = "exportEvent"
EXPORT_CANDIDATE_SCHEMA: Final = "exportCandidate"
REDACTED: Final = "[redacted]"

_JSON_TYPES: Final = frozenset({"", "application/json", "text/json", "text/plain"})
_URL: Final = re.compile(r"^\s*https?://", re.IGNORECASE)
_WORD_START: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD: Final = re.compile(r"[^A-Za-z0-9]+")
_STARTS: Final = frozenset({"start_map", "start_array"})
_ENDS: Final = frozenset({"end_map", "end_array"})


class InvalidExport(Exception):
    """Raised when an export file is not JSON or not shaped `{created, candidates: [...]}`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- webhooks ---------------------------------------------------------------------------------


def decode(inbound: Inbound) -> Any:
    """The webhook body: a JSON object, or None for an empty body (a subscription validation).

    Inspera's content type is not documented beyond "JSON": missing or text/plain is taken too,
    because a refused notification is lost after 3 retries.
    """
    if not inbound.body.strip():
        return None
    media = inbound.media_type
    if media not in _JSON_TYPES and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(f"Inspera webhooks are application/json, not {media!r}")
    try:
        body = loads_json(inbound.body)
    except InvalidJson as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    if body is not None and not isinstance(body, dict):
        raise MalformedPayload("expected an Inspera webhook (a JSON object)")
    return body


def split(body: Any) -> Sequence[Item]:
    """One item per notification; none for a subscription validation (empty body or `{}`).

    A non-empty object without `event` is still one item: it fails the schema and is kept as a
    dead letter, so a notification in an unexpected shape is never silently dropped.
    """
    if not body:
        return []
    payload, urls = redact_urls(body)
    event, context = body.get("event"), body.get("contextObjectId")
    identity = None
    if isinstance(event, str) and event and context is not None:
        # Inspera documents no delivery id: a re-delivery repeats these three (contract §4).
        identity = f"{event}|{_id_text(context)}|{body.get('timestamp') or ''}"
    return [Item(payload=payload, schema=WEBHOOK_SCHEMA, identity=identity, meta={"urls": urls})]


def redact_urls(value: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """`value` with every http(s) URL string replaced by "[redacted]", and the URLs found, by
    dotted path (`data.url`, `links.0`)."""
    found: dict[str, str] = {}

    def walk(node: Any, where: str) -> Any:
        if isinstance(node, str) and _URL.match(node):
            found[where] = node.strip()
            return REDACTED
        if isinstance(node, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{where}.{i}" if where else str(i)) for i, v in enumerate(node)]
        return node

    return walk(value, path), found


def download_url(item: Item, keys: Sequence[str]) -> str | None:
    """The export's pre-signed URL: the first of `keys` (dotted paths) that held a URL."""
    urls: Mapping[str, str] = item.meta.get("urls") or {}
    for key in keys:
        if key in urls:
            return urls[key]
    return None


def webhook_event(item: Item) -> str | None:
    """The webhook's event name, if it has one."""
    event = item.payload.get("event") if isinstance(item.payload, dict) else None
    return event if isinstance(event, str) else None


def webhook_object_id(item: Item) -> str | None:
    """The webhook's contextObjectId as a string (the test id of test events)."""
    if not isinstance(item.payload, dict):
        return None
    return _id_text(item.payload.get("contextObjectId"))


# --- the test-events export -------------------------------------------------------------------


class ExportParser:
    """A push parser of a test-events export `{created, candidates: [...]}`: `feed` it bytes as
    they come and get back each candidate once it is complete.

    Memory is bounded by one candidate (its events), never the whole file: candidates are built
    one at a time from ijson's token stream and handed over as soon as they close. Other
    top-level keys are skipped without being built.
    """

    def __init__(self) -> None:
        self._tokens: list[tuple[str, Any]] = ijson.sendable_list()
        self._coro = ijson.basic_parse_coro(self._tokens, use_float=True)
        self._depth = 0
        self._top_key: str | None = None
        self._in_candidates = False
        self._builder: Any = None
        self.saw_candidates = False
        self.created: Any = None
        self.candidates = 0

    def feed(self, chunk: bytes) -> list[Any]:
        """The candidates completed by `chunk`."""
        try:
            self._coro.send(chunk)
        except ijson.JSONError:
            # ijson's message quotes the input, which may hold a pre-signed URL: not repeated.
            raise InvalidExport("the export is not valid JSON") from None
        return self._drain()

    def close(self) -> list[Any]:
        """The last candidates; raises InvalidExport if the file ended early or has no array."""
        try:
            self._coro.close()
        except ijson.JSONError:
            raise InvalidExport("the export is not valid JSON (truncated?)") from None
        done = self._drain()
        if not self.saw_candidates:
            raise InvalidExport("the export has no `candidates` array")
        return done

    def _drain(self) -> list[Any]:
        done: list[Any] = []
        for kind, value in self._tokens:
            if self._builder is not None:
                candidate = self._build(kind, value)
            elif kind in _STARTS:
                candidate = self._open(kind, value)
            elif kind in _ENDS:
                candidate = self._close()
            else:
                candidate = self._scalar(kind, value)
            if candidate is not _NOTHING:
                done.append(candidate)
                self.candidates += 1
        del self._tokens[:]
        return done

    def _build(self, kind: str, value: Any) -> Any:
        """A token inside a candidate: built; the candidate is returned once it closes."""
        self._builder.event(kind, value)
        if kind in _STARTS:
            self._depth += 1
        elif kind in _ENDS:
            self._depth -= 1
            if self._depth == 2:
                built, self._builder = self._builder.value, None
                return built
        return _NOTHING

    def _open(self, kind: str, value: Any) -> Any:
        self._depth += 1
        if self._depth == 1 and kind != "start_map":
            raise InvalidExport("the export is not a JSON object")
        if self._depth == 2 and self._top_key == "candidates":
            if kind != "start_array":
                raise InvalidExport("`candidates` is not an array")
            self._in_candidates = self.saw_candidates = True
        elif self._depth == 3 and self._in_candidates:
            self._builder = ijson.ObjectBuilder()
            self._builder.event(kind, value)
        return _NOTHING  # containers of other top-level keys are skipped, not built

    def _close(self) -> Any:
        self._depth -= 1
        if self._depth == 1:
            self._in_candidates = False
        return _NOTHING

    def _scalar(self, kind: str, value: Any) -> Any:
        if self._depth == 0:
            raise InvalidExport("the export is not a JSON object")
        if self._depth == 1:
            if kind == "map_key":
                self._top_key = value
            elif self._top_key == "created":
                self.created = value
            elif self._top_key == "candidates":
                raise InvalidExport("`candidates` is not an array")
        elif self._depth == 2 and self._in_candidates:
            return value  # a candidate that is not an object: split into a dead letter
        return _NOTHING


_NOTHING: Final = object()


def export_items(test_id: str, candidate: Any, index: int, created: Any = None) -> list[Item]:
    """One item per event of one candidate of the export of test `test_id`.

    Each event is wrapped with the test id and the candidate's ids (the digest of the canonical
    id covers them, so identical system events of two candidates stay two records). A candidate
    that is not an object, or whose `events` is not an array, is one item that fails the schema.
    """
    where = f"/candidates/{index}"
    meta = {"export_created": created} if isinstance(created, str) and created else {}
    events = candidate.get("events") if isinstance(candidate, dict) else None
    if not isinstance(candidate, dict) or not isinstance(events, list | None):
        return [
            Item(
                payload={"testId": test_id, "candidate": _without_secrets(candidate)},
                schema=EXPORT_CANDIDATE_SCHEMA,
                where=where,
                meta=meta,
            )
        ]
    ids = {k: candidate[k] for k in ("userId", "candidateId") if candidate.get(k) is not None}
    items = []
    for position, event in enumerate(events or ()):
        event_id = _id_text(event.get("eventId")) if isinstance(event, dict) else None
        items.append(
            Item(
                payload={"testId": test_id, "candidate": ids, "event": _without_secrets(event)},
                schema=EXPORT_EVENT_SCHEMA,
                where=f"{where}/events/{position}",
                identity=f"{test_id}/{event_id}" if event_id else None,
                meta=meta,
            )
        )
    return items


def _without_secrets(value: Any) -> Any:
    """`value` without pre-signed URLs: `presignedUrl` keys dropped (attachments keep name, id
    and size), and any other URL with a query string (where signatures live) redacted."""
    if isinstance(value, dict):
        return {
            k: _without_secrets(v) for k, v in value.items() if str(k).lower() != "presignedurl"
        }
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    if isinstance(value, str) and _URL.match(value) and "?" in value:
        return REDACTED
    return value


# --- normalization ----------------------------------------------------------------------------


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """The canonical record of one schema-valid webhook or export event."""
    if item.schema == EXPORT_EVENT_SCHEMA:
        return [_export_event(item)]
    return [_webhook(item, ctx)]


def _webhook(item: Item, ctx: NormalizeContext) -> CanonicalEvent:
    payload: dict[str, Any] = item.payload
    event: str = payload["event"]
    object_id = _id_text(payload["contextObjectId"])
    timestamp = payload.get("timestamp")
    # The timestamp is optional in the contract; without it, when the gateway received it.
    time = normalize_time(timestamp, "/timestamp") if timestamp else format_time(ctx.received_at)
    fields = {
        k: v for k, v in payload.items() if k not in ("event", "contextObjectId", "timestamp")
    }
    data = compact(
        {
            "action": action_of(event),
            "assessment": {"id": object_id} if event in TEST_EVENTS and object_id else None,
            "vendor": compact(
                {
                    "name": NAME,
                    "event_type": event,
                    "context_object_id": object_id,
                    "fields": fields or None,
                }
            ),
        }
    )
    return CanonicalEvent(EventType.ACTIVITY, time, item.identity or "", data, object_id)


def _export_event(item: Item) -> CanonicalEvent:
    payload: dict[str, Any] = item.payload
    test_id: str = payload["testId"]
    candidate: dict[str, Any] = payload["candidate"]
    event: dict[str, Any] = payload["event"]
    user_id = _id_text(candidate.get("userId"))
    candidate_id = _id_text(candidate.get("candidateId"))
    learner = compact({"id": user_id or candidate_id, "candidate_id": candidate_id})
    creator = _id_text(event.get("userId"))
    # The event's userId is whoever created it (candidate, system, invigilator): an actor only
    # when it is known to be someone else than the candidate.
    actor = {"id": creator} if creator and user_id and creator != user_id else None
    flagging = event.get("flaggingInfo")
    flagged = isinstance(flagging, dict) and any(v not in (None, "", []) for v in flagging.values())
    proctoring = compact(
        {
            **(_flagging(flagging) if flagged and isinstance(flagging, dict) else {}),
            "extra_info": _extra_info(event.get("extraInfo")),
            "attachments": _attachments(event.get("attachedFiles")),
        }
    )
    data = compact(
        {
            "action": action_of(event["event"]),
            "learner": learner,
            "actor": actor,
            "assessment": {"id": test_id},
            "proctoring": proctoring or None,
            "vendor": compact(
                {
                    "name": NAME,
                    "event_type": event["event"],
                    "event_id": _id_text(event.get("eventId")),
                    "created_by": creator if actor is None and creator != user_id else None,
                    "source": "test_events_export",
                    "export_created": item.meta.get("export_created"),
                }
            ),
        }
    )
    kind = EventType.PROCTORING_FLAGGED if flagged else EventType.ACTIVITY
    time = normalize_time(event["timeStamp"], "/event/timeStamp")
    return CanonicalEvent(kind, time, item.identity or "", data, test_id)


def _flagging(flagging: dict[str, Any]) -> dict[str, Any]:
    return compact(
        {
            "flag_type": flagging.get("flagType"),
            "flag_sub_types": flagging.get("flagSubTypes") or None,
            "severity_level": flagging.get("severityLevel"),
            "comment": flagging.get("comment"),
        }
    )


def _extra_info(extra: Any) -> dict[str, Any] | None:
    if not isinstance(extra, dict):
        return None
    return compact({"type": extra.get("type"), "value": extra.get("value")}) or None


def _attachments(files: Any) -> list[dict[str, Any]] | None:
    """Name, content item and size of each attached file: never its (pre-signed) URL."""
    if not isinstance(files, list) or not files:
        return None
    return [
        compact(
            {
                "file_name": f.get("fileName"),
                "content_item_id": _id_text(f.get("contentItemId")),
                "file_size": f.get("fileSize"),
            }
        )
        for f in files
        if isinstance(f, dict)
    ] or None


def action_of(name: str) -> str:
    """An Inspera event name in snake_case (`confirm_final_grades`, `newSebLogin` ->
    `new_seb_login`, `NETWORK ERROR` -> `network_error`)."""
    words = _NOT_WORD.sub("_", _WORD_START.sub("_", name)).strip("_").lower()
    return words or "event"


def _id_text(value: Any) -> str | None:
    """An id as a string: 35199862 and 35199862.0 are "35199862"; blank or absent is None."""
    if value is None or isinstance(value, bool | dict | list):
        return None
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value).strip()
    return text or None
