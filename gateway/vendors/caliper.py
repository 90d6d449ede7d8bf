"""IMS Caliper 1.1 / 1.2 (Blackboard Learn, Canvas's Caliper stream, any Caliper sensor).

Contract (docs/vendor-contracts.md §1): one Envelope per POST, `application/json`, bearer or raw
key; 200 with an empty body on success; 400 malformed or missing envelope, 415 other content
types, 422 unsupported `dataVersion`. Events inside a well-formed envelope never fail the request:
invalid ones are dead-lettered, because sensors never retry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

import orjson

from gateway.auth import Scheme
from gateway.canonical import (
    CanonicalEvent,
    EventType,
    NormalizeContext,
    compact,
    format_time,
    normalize_time,
)
from gateway.errors import MalformedPayload, UnsupportedMediaType, UnsupportedVersion
from gateway.limits import InvalidJson, loads_json
from gateway.settings import Settings
from gateway.vendors.base import Inbound, Item, Reply, Vendor

NAME: Final = "caliper"
DATA_VERSIONS: Final = {
    "http://purl.imsglobal.org/ctx/caliper/v1p1": "1.1",
    "http://purl.imsglobal.org/ctx/caliper/v1p2": "1.2",
}
EVENT_SCHEMA: Final = "event"
ENTITY_SCHEMA: Final = "entityDescription"

_ASSESSMENT_ACTIONS: Final = {
    "Started": EventType.ATTEMPT_STARTED,
    "Paused": EventType.ATTEMPT_PAUSED,
    "Resumed": EventType.ATTEMPT_RESUMED,
    "Restarted": EventType.ATTEMPT_RESTARTED,
    "Reset": EventType.ATTEMPT_RESET,
    "Submitted": EventType.ATTEMPT_SUBMITTED,
    "Completed": EventType.ATTEMPT_SUBMITTED,  # Blackboard's prose: "starts or submits a test"
}
_ITEM_ACTIONS: Final = {
    "Started": EventType.ITEM_STARTED,
    "Skipped": EventType.ITEM_SKIPPED,
    "Completed": EventType.ITEM_COMPLETED,
    "Submitted": EventType.ITEM_COMPLETED,  # Blackboard's prose for AssessmentItemEvent
}
_RESPONSE_TYPES: Final = frozenset(
    {
        "Response",
        "FillinBlankResponse",
        "MultipleChoiceResponse",
        "MultipleResponseResponse",
        "SelectTextResponse",
        "TrueFalseResponse",
        "OpenEndedResponse",
        "RatingScaleResponse",
    }
)
_IRI_SEPARATORS: Final = re.compile(r"[#/:]")
_IMS_IRI: Final = "http://purl.imsglobal.org/"
_WORD_START: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def term(value: Any) -> str:
    """A Caliper term from a term or an IRI (`...action#Started` -> `Started`)."""
    if not isinstance(value, str):
        return ""
    return _IRI_SEPARATORS.split(value)[-1] if ":" in value else value


def snake_case(action: str) -> str:
    """`NavigatedTo` -> `navigated_to`: the canonical spelling of a vendor's verb."""
    return _WORD_START.sub("_", action).lower()


def is_event(item: Any) -> bool:
    """True for an event, False for an entity description (data[] mixes both)."""
    if not isinstance(item, dict):
        return True  # not an entity either: validated (and rejected) as an event
    return "action" in item or "eventTime" in item or term(item.get("type")).endswith("Event")


def decode(inbound: Inbound) -> dict[str, Any]:
    """The Envelope as a dict; raises the error the Caliper contract names for each defect."""
    media = inbound.media_type
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"Caliper envelopes are application/json, not {media or 'none'!r}"
        )
    try:
        body = loads_json(inbound.body)
    except InvalidJson as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedPayload("expected a Caliper Envelope (a JSON object)")
    if "data" not in body and ("type" in body or "@type" in body):
        raise MalformedPayload(
            "a bare Caliper event or entity: send it inside an Envelope "
            "{sensor, sendTime, dataVersion, data: [...]}"
        )
    version = body.get("dataVersion")
    if version is None and "data" in body and "sensor" in body:
        raise UnsupportedVersion(
            "no dataVersion: Caliper 1.0 envelopes are not supported, send 1.1 or 1.2"
        )
    if isinstance(version, str) and version not in DATA_VERSIONS:
        raise UnsupportedVersion(
            f"dataVersion {version!r} is not supported; supported: {', '.join(DATA_VERSIONS)}"
        )
    return body


def split(envelope: dict[str, Any]) -> Sequence[Item]:
    """One item per element of `data`, events and entity descriptions alike."""
    meta = {
        "sensor": envelope.get("sensor"),
        "send_time": envelope.get("sendTime"),
        "data_version": envelope.get("dataVersion"),
    }
    items = []
    for index, element in enumerate(envelope["data"]):
        identity = element.get("id") if isinstance(element, dict) else None
        items.append(
            Item(
                payload=element,
                schema=EVENT_SCHEMA if is_event(element) else ENTITY_SCHEMA,
                where=f"/data/{index}",
                identity=identity if isinstance(identity, str) and identity else None,
                meta=meta,
            )
        )
    return items


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """The canonical record of one schema-valid event or entity description."""
    payload: dict[str, Any] = item.payload
    identity = item.identity or ""
    vendor = compact(
        {
            "name": NAME,
            "event_type": payload.get("type"),
            "event_id": payload.get("id"),
            "sensor": item.meta.get("sensor"),
            "data_version": item.meta.get("data_version"),
        }
    )
    if item.schema == ENTITY_SCHEMA:
        entity = _entity(payload)
        data = {"action": "described", "entity": entity, "vendor": vendor}
        # An entity description has no event time: when it last changed, else when it was sent.
        when = (
            payload.get("dateModified") or payload.get("dateCreated") or item.meta.get("send_time")
        )
        time = normalize_time(when) if when else format_time(ctx.received_at)
        return [CanonicalEvent(EventType.ENTITY_DESCRIBED, time, identity, data, entity["id"])]

    event_type, action = term(payload.get("type")), term(payload.get("action"))
    vendor.update(
        compact(
            {
                "action": payload.get("action"),
                "profile": payload.get("profile"),
                "ed_app": _id(payload.get("edApp")),
                "session": _id(payload.get("session")),
                "extensions": payload.get("extensions") or None,
            }
        )
    )
    obj, generated = payload.get("object"), payload.get("generated")
    attempt = _attempt_of(obj, generated)
    learner = (
        _entity(attempt.get("assignee"))
        if isinstance(attempt, dict) and attempt.get("assignee")
        else None
    )
    actor = _entity(payload.get("actor"))
    if learner is None and _kind(payload.get("actor")) in ("", "Person"):
        learner, actor_other = actor, None
    else:
        actor_other = actor if learner is None or actor["id"] != learner["id"] else None

    # A thinned object (a bare IRI) is known only by the event type it belongs to.
    thinned = isinstance(obj, str)
    is_item = _kind(obj) == "AssessmentItem" or (thinned and event_type == "AssessmentItemEvent")
    item_entity = obj if is_item else None
    assessment = _assessment_of(event_type, obj, item_entity, attempt)
    data = compact(
        {
            "action": snake_case(action),
            "learner": learner,
            "actor": actor_other,
            "assessment": assessment,
            "item": _entity(item_entity) if item_entity is not None else None,
            "attempt": _attempt(attempt),
            "response": _response(generated),
            "score": _score(generated),
            "course": _course(payload.get("group")),
            "vendor": vendor,
        }
    )
    canonical_type = _canonical_type(event_type, action)
    subject = _id(attempt) or (assessment or {}).get("id") or _id(obj)
    time = normalize_time(payload.get("eventTime"), "/eventTime")
    return [CanonicalEvent(canonical_type, time, identity, data, subject)]


def _canonical_type(event_type: str, action: str) -> str:
    if event_type == "AssessmentEvent":
        return _ASSESSMENT_ACTIONS.get(action, EventType.ACTIVITY)
    if event_type == "AssessmentItemEvent":
        return _ITEM_ACTIONS.get(action, EventType.ACTIVITY)
    if event_type == "GradeEvent" and action == "Graded":
        return EventType.ATTEMPT_GRADED
    return EventType.ACTIVITY


def _kind(entity: Any) -> str:
    return term(entity.get("type")) if isinstance(entity, dict) else ""


def _id(entity: Any) -> str | None:
    if isinstance(entity, str):
        return entity or None
    if isinstance(entity, dict) and isinstance(entity.get("id"), str):
        return str(entity["id"])
    return None


def _entity(entity: Any) -> dict[str, Any]:
    """`{id, type, name}` of an entity given as an object or as a bare IRI string."""
    if isinstance(entity, dict):
        kind = entity.get("type")
        # IMS's own IRIs name Caliper terms; other vendors' IRIs (Blackboard's) stay whole.
        if isinstance(kind, str) and kind.startswith(_IMS_IRI):
            kind = term(kind)
        return compact({"id": _id(entity), "type": kind, "name": entity.get("name")})
    return {"id": entity}


def _attempt_of(obj: Any, generated: Any) -> Any:
    """The Attempt an event is about: generated, object (grading, Canvas), or a response's."""
    for candidate in (generated, obj):
        if _kind(candidate) == "Attempt":
            return candidate
    for candidate in (generated, obj):
        if isinstance(candidate, dict) and candidate.get("attempt") is not None:
            nested = candidate["attempt"]
            return nested if isinstance(nested, dict) else {"id": nested}
    return None


def _assessment_of(
    event_type: str, obj: Any, item_entity: Any, attempt: Any
) -> dict[str, Any] | None:
    """The Assessment: the object, the item's parent, or what the attempt was assigned."""
    source: Any = None
    if _kind(obj) == "Assessment" or (isinstance(obj, str) and event_type == "AssessmentEvent"):
        source = obj
    elif isinstance(item_entity, dict):
        source = item_entity.get("isPartOf")
    elif isinstance(attempt, dict):
        source = attempt.get("assignable")
        if _kind(source) == "AssessmentItem":  # an item-level attempt: its item's parent
            source = source.get("isPartOf")
    if source is None:
        return None
    if not isinstance(source, dict):
        return {"id": source}
    return compact(
        {
            **_entity(source),
            "max_score": _number(source.get("maxScore")),
            "max_attempts": _number(source.get("maxAttempts")),
            "due_at": _time_or_none(source.get("dateToSubmit")),
        }
    )


def _attempt(attempt: Any) -> dict[str, Any] | None:
    if attempt is None:
        return None
    if not isinstance(attempt, dict):
        return {"id": attempt}
    return compact(
        {
            "id": _id(attempt),
            "parent_id": _id(attempt.get("isPartOf")),
            "count": _number(attempt.get("count")),
            "started_at": _time_or_none(attempt.get("startedAtTime")),
            "ended_at": _time_or_none(attempt.get("endedAtTime")),
            "duration": attempt.get("duration"),
        }
    )


def _response(generated: Any) -> dict[str, Any] | None:
    if _kind(generated) not in _RESPONSE_TYPES:
        return None
    return compact(
        {
            "id": _id(generated),
            "type": term(generated.get("type")),
            "value": generated.get("value"),
            "values": generated.get("values"),
            "started_at": _time_or_none(generated.get("startedAtTime")),
            "ended_at": _time_or_none(generated.get("endedAtTime")),
            "duration": generated.get("duration"),
        }
    )


def _score(generated: Any) -> dict[str, Any] | None:
    if _kind(generated) not in ("Score", "Result"):
        return None
    return compact(
        {
            "id": _id(generated),
            "given": _number(generated.get("scoreGiven", generated.get("resultScore"))),
            "max": _number(generated.get("maxScore", generated.get("maxResultScore"))),
            "comment": generated.get("comment"),
            "scored_by": _id(generated.get("scoredBy")),
        }
    )


def _course(group: Any) -> dict[str, Any] | None:
    if group is None:
        return None
    if not isinstance(group, dict):
        return {"id": group}
    return compact(
        {
            **_entity(group),
            "course_number": group.get("courseNumber"),
            "academic_session": group.get("academicSession"),
        }
    )


def _number(value: Any) -> int | float | None:
    """Numbers as numbers, numbers sent as strings (`"150"`) too; anything else is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _time_or_none(value: Any) -> str | None:
    return normalize_time(value) if isinstance(value, str) and value else None


def describe(settings: Settings) -> Reply:
    """Caliper 1.2 endpoint configuration, answered on GET.

    Both spellings: the HTML spec writes camelCase, IMS's fixture and caliper-python snake_case.
    """
    config = {
        "caliperSupportedVersions": list(DATA_VERSIONS),
        "caliperMaximumPayloadSize": settings.server.max_body_bytes // 1024,
        "caliperSupportedExtensions": {},
        "caliper_supported_versions": list(DATA_VERSIONS),
        "caliper_maximum_payload_size": settings.server.max_body_bytes // 1024,
        "caliper_supported_extensions": {},
    }
    return Reply(200, orjson.dumps(config), "application/json")


VENDOR: Final = Vendor(
    name=NAME,
    path="/v1/caliper",
    auth=Scheme.BEARER_OR_RAW,
    schema_file="caliper.schema.json",
    envelope_schema="envelope",
    item_schemas=(EVENT_SCHEMA, ENTITY_SCHEMA),
    decode=decode,
    split=split,
    normalize=normalize,
    success=Reply(200),
    describe=describe,
)
