"""IMS Caliper 1.1 / 1.2 (Blackboard Learn, Canvas's Caliper stream, any Caliper sensor).

Contract (docs/vendors/caliper.md#contract): one Envelope per POST, `application/json`, bearer or
raw key; 200 with an empty body on success; 400 malformed or missing envelope (an empty `data`
included), 415 other content types, 422 unsupported `dataVersion`. Events inside a well-formed
envelope never fail the request: invalid ones are dead-lettered, because sensors never retry.

Caliper payloads are JSON-LD: a `null` value means the property is absent. The schema accepts
`null` in every optional property and the normalizer reads `null` as absent, so the item stays
exactly as sent (for `data.original`, dead letters and replay) and no event is walked twice; the
canonical record never carries those nulls. The leniencies for real emitters (entities without
id or type, Joda-Time timestamps, facts in `extensions`) are listed in docs/canonical-record.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import orjson

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
    SignatureRefused,
    Unauthorized,
    UnsupportedMediaType,
    UnsupportedVersion,
)
from gateway.limits import InvalidJson, loads_json
from gateway.settings import Settings
from gateway.vendors.base import Inbound, Item, Reply, problem_reply

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
_SCORE_TYPES: Final = frozenset({"Score", "Result"})
_IRI_SEPARATORS: Final = re.compile(r"[#/:]")
_IMS_IRI: Final = "http://purl.imsglobal.org/"
_WORD_START: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 6750 §3: a 401 of a bearer-token resource names the scheme.
WWW_AUTHENTICATE: Final = "Bearer"


def term(value: Any) -> str:
    """A Caliper term from a term or an IRI (`...action#Started` -> `Started`)."""
    if not isinstance(value, str):
        return ""
    return _IRI_SEPARATORS.split(value)[-1] if ":" in value else value


@lru_cache(maxsize=1024)  # a vocabulary of verbs: the regex runs once per verb, not per event
def snake_case(action: str) -> str:
    """`NavigatedTo` -> `navigated_to`: the canonical spelling of a vendor's verb."""
    return _WORD_START.sub("_", action).lower()


def is_event(item: Any) -> bool:
    """True for an event, False for an entity description (data[] mixes both).

    A `null` action or eventTime is absent (JSON-LD), so it does not make an entity an event.
    """
    if not isinstance(item, dict):
        return True  # not an entity either: validated (and rejected) as an event
    return (
        item.get("action") is not None
        or item.get("eventTime") is not None
        or term(item.get("type")).endswith("Event")
    )


def decode(inbound: Inbound) -> dict[str, Any]:
    """The Envelope as a dict; raises the error the Caliper contract names for each defect."""
    media = inbound.media_type
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise UnsupportedMediaType(
            f"Caliper envelopes are application/json, not {media or 'none'!r}"
        )
    if not inbound.body.strip():
        # Said as such: the parser's "EOF while parsing a value" does not say it.
        raise MalformedPayload("empty body: expected a Caliper Envelope (a JSON object)")
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
    vendor = _vendor(payload, item.meta)
    if item.schema == ENTITY_SCHEMA:
        entity = _entity(payload)
        data = {"action": "described", "entity": entity, "vendor": vendor}
        # An entity description has no event time: when it last changed, else when it was sent.
        when = (
            payload.get("dateModified") or payload.get("dateCreated") or item.meta.get("send_time")
        )
        time = _timestamp(when) if when else format_time(ctx.received_at)
        return [CanonicalEvent(EventType.ENTITY_DESCRIBED, time, identity, data, entity.get("id"))]

    event_type, action = term(payload.get("type")), term(payload.get("action"))
    _event_vendor(payload, vendor)
    obj, generated = payload.get("object"), payload.get("generated")
    obj_kind, generated_kind = _kind(obj), _kind(generated)  # each read once, used below
    attempt = _attempt_of(obj, obj_kind, generated, generated_kind)
    learner = _ref(_fact(attempt, "assignee"))
    actor = _ref(payload.get("actor"))
    if learner is None and _kind(payload.get("actor")) in ("", "Person"):
        learner, actor_other = actor, None
    elif actor is not None and (learner is None or actor["id"] != learner["id"]):
        actor_other = actor
    else:
        actor_other = None

    # A thinned object (a bare IRI) is known only by the event type it belongs to.
    thinned = isinstance(obj, str)
    is_item = obj_kind == "AssessmentItem" or (thinned and event_type == "AssessmentItemEvent")
    item_entity = obj if is_item else None
    assessment = _assessment_of(event_type, obj, obj_kind, item_entity, attempt)
    data = {"action": snake_case(action)}
    if learner is not None:
        data["learner"] = learner
    if actor_other is not None:
        data["actor"] = actor_other
    if assessment is not None:
        data["assessment"] = assessment
    _event_facts(data, item_entity, attempt, generated, generated_kind, group=payload.get("group"))
    data["vendor"] = vendor
    canonical_type = _canonical_type(event_type, action)
    subject = _id(attempt) or (assessment or {}).get("id") or _id(obj)
    time = _timestamp(payload.get("eventTime"), "/eventTime")
    return [CanonicalEvent(canonical_type, time, identity, data, subject)]


# The dicts below are built field by field, known fields only (absent means unknown): what
# `compact` makes of a literal, without making the literal, on every event's path.


def _vendor(payload: dict[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The vendor's own facts of an event or entity description (`data.vendor`)."""
    vendor: dict[str, Any] = {"name": NAME}
    if (kind := payload.get("type")) is not None:
        vendor["event_type"] = kind
    if (vendor_id := payload.get("id")) is not None:
        vendor["event_id"] = vendor_id
    if (sensor := meta.get("sensor")) is not None:
        vendor["sensor"] = sensor
    if (version := meta.get("data_version")) is not None:
        vendor["data_version"] = version
    return vendor


def _event_vendor(payload: dict[str, Any], vendor: dict[str, Any]) -> None:
    """Add an event's own vendor facts to `vendor`."""
    if (action := payload.get("action")) is not None:
        vendor["action"] = action
    if (profile := payload.get("profile")) is not None:
        vendor["profile"] = profile
    if (ed_app := _id(payload.get("edApp"))) is not None:
        vendor["ed_app"] = ed_app
    if (session := _id(payload.get("session"))) is not None:
        vendor["session"] = session
    # The event's own map, without the nulls it may hold (absent, in JSON-LD).
    if extensions := _without_nulls(payload.get("extensions")):
        vendor["extensions"] = extensions


def _event_facts(
    data: dict[str, Any],
    item_entity: Any,
    attempt: Any,
    generated: Any,
    generated_kind: str,
    *,
    group: Any,
) -> None:
    """Add what an event says of the item, the attempt, the response, the score and the
    course to its `data`."""
    if (item_ref := _ref(item_entity)) is not None:
        data["item"] = item_ref
    if (attempt_ref := _attempt(attempt)) is not None:
        data["attempt"] = attempt_ref
    if (response := _response(generated, generated_kind)) is not None:
        data["response"] = response
    if (score := _score(_score_of(generated, generated_kind))) is not None:
        data["score"] = score
    if (course := _course(group)) is not None:
        data["course"] = course


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
    if isinstance(entity, dict):
        found = entity.get("id")
        if isinstance(found, str):
            return found
    return None


def _entity(entity: Any) -> dict[str, Any]:
    """`{id, type, name}` of an entity given as an object or as a bare IRI string.

    Any type maps so, Caliper terms, IRIs and unknown types alike (the generic entity mapping).
    """
    if isinstance(entity, dict):
        fields: dict[str, Any] = {}
        if isinstance(found := entity.get("id"), str):
            fields["id"] = found
        if (kind := entity.get("type")) is not None:
            # IMS's own IRIs name Caliper terms; other vendors' IRIs (Blackboard's) stay whole.
            ims = isinstance(kind, str) and kind.startswith(_IMS_IRI)
            fields["type"] = term(kind) if ims else kind
        if isinstance(name := entity.get("name"), str):
            fields["name"] = name
        return fields
    return {"id": entity}


def _ref(entity: Any) -> dict[str, Any] | None:
    """The entity as a canonical reference, or None when it is unknown or has no id.

    An entity given only by its properties (no id: a JSON-LD blank node) names nothing a consumer
    could join on, so it is left out rather than published without the id every reference has.
    """
    if entity is None:
        return None
    ref = _entity(entity)
    return ref if ref.get("id") else None


def _fact(entity: Any, name: str) -> Any:
    """A property of an entity, or, when the entity lacks it, the same name in its `extensions`.

    Open edX's event-routing-backends puts an Attempt's `assignee`, `assignable` and `count` in
    the Attempt's `extensions`: they are the same facts, found where that emitter puts them.
    """
    if not isinstance(entity, dict):
        return None
    value = entity.get(name)
    if value is None:
        extensions = entity.get("extensions")
        if isinstance(extensions, dict):
            value = extensions.get(name)
    return value


def _attempt_of(obj: Any, obj_kind: str, generated: Any, generated_kind: str) -> Any:
    """The Attempt an event is about: generated, object (grading, Canvas), or a response's."""
    if generated_kind == "Attempt":
        return generated
    if obj_kind == "Attempt":
        return obj
    for candidate in (generated, obj):
        if isinstance(candidate, dict) and candidate.get("attempt") is not None:
            nested = candidate["attempt"]
            return nested if isinstance(nested, dict) else {"id": nested}
    return None


def _score_of(generated: Any, kind: str) -> Any:
    """The Score (or Result) an event generated: `generated` itself, or, when `generated` is an
    entity given only by its properties, the score it carries (Open edX: `{"score": {...}}`).

    An untyped entity with `scoreGiven` or `resultScore` is a score given by its properties.
    """
    if not isinstance(generated, dict):
        return None
    if kind in _SCORE_TYPES:
        return generated
    if generated.get("type") is not None:
        return None  # another entity: a Response, an Attempt, a collection...
    if generated.get("scoreGiven") is not None or generated.get("resultScore") is not None:
        return generated
    for name in ("score", "result"):
        nested = generated.get(name)
        if isinstance(nested, dict) and (
            _kind(nested) in _SCORE_TYPES or nested.get("type") is None
        ):
            return nested
    return None


def _assessment_of(
    event_type: str, obj: Any, obj_kind: str, item_entity: Any, attempt: Any
) -> dict[str, Any] | None:
    """The Assessment: the object, the item's parent, or what the attempt was assigned."""
    source: Any = None
    if obj_kind == "Assessment" or (isinstance(obj, str) and event_type == "AssessmentEvent"):
        source = obj
    elif isinstance(item_entity, dict):
        source = item_entity.get("isPartOf")
    elif isinstance(attempt, dict):
        source = _fact(attempt, "assignable")
        if _kind(source) == "AssessmentItem":  # an item-level attempt: its item's parent
            source = source.get("isPartOf")
    if source is None:
        return None
    if not isinstance(source, dict):
        return {"id": source}
    if _id(source) is None:
        return None  # given only by its properties (Open edX's `{"type": "Assessment"}`)
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
    if _id(attempt) is None:
        return None  # an Attempt given only by its properties: no id to key attempts on
    return compact(
        {
            "id": _id(attempt),
            "parent_id": _id(attempt.get("isPartOf")),
            "count": _number(_fact(attempt, "count")),
            "started_at": _time_or_none(attempt.get("startedAtTime")),
            "ended_at": _time_or_none(attempt.get("endedAtTime")),
            "duration": _text(attempt.get("duration")),
        }
    )


def _response(generated: Any, kind: str) -> dict[str, Any] | None:
    if kind not in _RESPONSE_TYPES or _id(generated) is None:
        return None
    return compact(
        {
            "id": _id(generated),
            "type": term(generated.get("type")),
            # As sent, less the nulls inside (absent in JSON-LD).
            "value": _without_nulls(generated.get("value")),
            "values": _without_nulls(generated.get("values")),
            "started_at": _time_or_none(generated.get("startedAtTime")),
            "ended_at": _time_or_none(generated.get("endedAtTime")),
            "duration": _text(generated.get("duration")),
        }
    )


def _score(score: Any) -> dict[str, Any] | None:
    if not isinstance(score, dict):
        return None
    given = score.get("scoreGiven")
    maximum = score.get("maxScore")
    return compact(
        {
            "id": _id(score),
            "given": _number(given if given is not None else score.get("resultScore")),
            "max": _number(maximum if maximum is not None else score.get("maxResultScore")),
            "comment": _text(score.get("comment")),
            "scored_by": _id(score.get("scoredBy")),
        }
    )


def _course(group: Any) -> dict[str, Any] | None:
    if group is None:
        return None
    if not isinstance(group, dict):
        return {"id": group}
    if _id(group) is None:
        return None  # given only by its properties: no id to join courses on
    course = _entity(group)
    if isinstance(number := group.get("courseNumber"), str):
        course["course_number"] = number
    if isinstance(session := group.get("academicSession"), str):
        course["academic_session"] = session
    return course


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
    if isinstance(value, dict):
        return _timestamp(value)
    return normalize_time(value) if isinstance(value, str) and value else None


def _timestamp(value: Any, path: str = "") -> str:
    """A date-time as sent: an RFC 3339 string, or a Joda-Time bean (its `millis`).

    HMH's caliper-java serialized Joda `DateTime`s with Jackson's bean serializer (no Joda
    module): an object whose `millis` is the instant, which the schema admits within years 1 to
    9999; anything else in an object is unusable and raises.
    """
    if isinstance(value, dict):
        millis = value.get("millis")
        if isinstance(millis, int) and not isinstance(millis, bool):
            try:
                return format_time(_EPOCH + timedelta(milliseconds=millis))
            except OverflowError:
                pass
        raise NormalizeError("expected a timestamp, got an object without usable millis", path)
    return normalize_time(value, path)


def _text(value: Any) -> str | None:
    """A string property as sent; anything else (null included) is unknown."""
    return value if isinstance(value, str) else None


def _without_nulls(value: Any) -> Any:
    """`value` with every null member of its objects removed, at any depth (JSON-LD: absent).

    Only values copied whole into the record go through here (extensions, response values), so
    no event is walked as a whole; and one that holds no null at all (the common case, told by a
    cheap check of its JSON bytes) is taken as it is, without a walk.
    """
    if not isinstance(value, dict | list) or b"null" not in orjson.dumps(value):
        return value
    return _drop_nulls(value)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value if v is not None]
    return value


def render_error(error: GatewayError) -> Reply:
    """The default problem+json; a 401 names the scheme to authenticate with (RFC 6750: sensors
    send a bearer token), unless a Standard Webhooks signature was refused: no HTTP scheme."""
    reply = problem_reply(error)
    if isinstance(error, Unauthorized) and not isinstance(error, SignatureRefused):
        headers = {**reply.headers, "www-authenticate": WWW_AUTHENTICATE}
        return Reply(reply.status, reply.body, reply.media_type, headers)
    return reply


def describe(settings: Settings) -> Reply:
    """Caliper 1.2 endpoint configuration, answered on GET.

    Both spellings: the HTML spec writes camelCase, IMS's fixture and caliper-python snake_case.
    The maximum payload size is `server.max_body_bytes` (4 MiB by default: Blackboard's batches
    run to a few hundred KB, and Caliper's own example endpoint says 512 KB).
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
