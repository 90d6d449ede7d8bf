"""Pearson LearningStudio eventing (`pearson.ls.assessment.studentexam.completed`).

Contract (docs/vendors/pearson.md#contract): one message per POST,
`application/x-www-form-urlencoded` with DELIVERY-ATTEMPT-ID, MESSAGE-ID, MESSAGE-TYPE,
AUTHORIZATION, PAYLOAD (the event JSON as a string), PAYLOAD-CONTENT-TYPE and optionally
AUTHORIZATION-DELIMITER; signed with AES-CMAC in the AUTHORIZATION field (`signature.py`). Success
is 200 with an empty body, and anything else makes Pearson redeliver for 72 hours. So once a
delivery is authenticated nothing about its content earns a 4xx: a payload that is not JSON, breaks
the schema or has a message type the gateway does not normalize is dead-lettered (with the message
id and type, for replay) and answered 200.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from gateway.auth import FORM, form_fields
from gateway.canonical import (
    CanonicalEvent,
    EventType,
    NormalizeContext,
    compact,
    content_digest,
    normalize_time,
)
from gateway.errors import NormalizeError, UnsafePayload, UnsupportedMediaType
from gateway.limits import InvalidJson, loads_json
from gateway.vendors.base import Inbound, Item

NAME: Final = "pearson"
STUDENT_EXAM_COMPLETED: Final = "pearson.ls.assessment.studentexam.completed"

# The schema entry point (schemas/pearson/pearson.schema.json): one for every message type, which
# checks each normalized type further by its MESSAGE-TYPE. Validation and normalization both go by
# the message's own type, so a dead letter replayed once its type has a mapping is taken.
MESSAGE_SCHEMA: Final = "message"

# Form fields. The message the gateway keeps (and digests, to recognize redeliveries) is made of
# the fields that are the same on every delivery of it; DELIVERY-ATTEMPT-ID changes per delivery
# and AUTHORIZATION (a timestamp and MAC, new or not) is a credential, so neither is part of it.
MESSAGE_ID: Final = "MESSAGE-ID"
MESSAGE_TYPE: Final = "MESSAGE-TYPE"
PAYLOAD: Final = "PAYLOAD"
PAYLOAD_CONTENT_TYPE: Final = "PAYLOAD-CONTENT-TYPE"
DELIVERY_ATTEMPT_ID: Final = "DELIVERY-ATTEMPT-ID"
_MESSAGE_FIELDS: Final = (MESSAGE_ID, MESSAGE_TYPE, PAYLOAD_CONTENT_TYPE)


def decode(inbound: Inbound) -> dict[str, str]:
    """The delivery's form fields.

    Parsed by `gateway.auth.form_fields`, the very function that verified the signature, so the
    fields processed are exactly the fields signed (a repeated field counts by its first value in
    both places). A body of another type cannot have authenticated, since the signature travels
    in the form; the check stays as the vendor's own statement of its encoding.
    """
    if inbound.media_type != FORM:
        raise UnsupportedMediaType(
            f"Pearson deliveries are {FORM}, not {inbound.media_type or 'none'!r}"
        )
    return form_fields(inbound.body)


def split(delivery: dict[str, str]) -> Sequence[Item]:
    """One item per delivery: the message, identified by MESSAGE-ID (stable across redeliveries)."""
    message: dict[str, Any] = {name: delivery[name] for name in _MESSAGE_FIELDS if name in delivery}
    if PAYLOAD in delivery:
        message[PAYLOAD] = _payload(delivery[PAYLOAD], delivery.get(PAYLOAD_CONTENT_TYPE, ""))
    delivery_id = delivery.get(DELIVERY_ATTEMPT_ID)
    return [
        Item(
            payload=message,
            schema=MESSAGE_SCHEMA,
            identity=delivery.get(MESSAGE_ID) or None,
            meta={"delivery_id": delivery_id} if delivery_id else {},
        )
    ]


def _payload(text: str, content_type: str) -> Any:
    """The PAYLOAD parsed when it is JSON; else the string as sent (the schema then rejects it,
    and the dead letter keeps it whole)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        return text
    try:
        return loads_json(text)
    except (InvalidJson, UnsafePayload):
        return text


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """The canonical record of one schema-valid studentexam.completed message.

    Other message types (`pearson.ls.threads.*`, `pearson.ls.gradebook.grade.created`, ...) have
    no documented payload: they are not normalized but dead-lettered whole as `unmappable`.
    """
    del ctx  # nothing about the request changes the mapping
    message: dict[str, Any] = item.payload
    message_type = message[MESSAGE_TYPE]
    if message_type != STUDENT_EXAM_COMPLETED:
        raise NormalizeError(
            f"MESSAGE-TYPE {message_type!r} is not normalized (only {STUDENT_EXAM_COMPLETED} is): "
            "the message is kept whole in the dead-letter topic",
            f"/{MESSAGE_TYPE}",
        )
    event: dict[str, Any] = message[PAYLOAD]
    obj: dict[str, Any] = event["object"]
    actor: dict[str, Any] = event["actor"]
    contexts: dict[str, Any] = event.get("contexts") or {}
    attempt = compact(
        {
            "id": _id(obj["id"]),
            "type": obj.get("type") or None,
            "started_at": _time(obj.get("startTime"), "/PAYLOAD/object/startTime"),
            "ended_at": _time(obj.get("endTime"), "/PAYLOAD/object/endTime"),
            "is_late": _flag(obj.get("isLateSubmission")),
            "is_complete": _flag(obj.get("isComplete")),
            "comment": _comment(obj.get("comment")),
        }
    )
    vendor = compact(
        {
            "name": NAME,
            "event_type": event["eventType"],
            "event_id": _id(event["eventId"]),
            "message_id": message[MESSAGE_ID],
            "message_type": message_type,
            "delivery_id": item.meta.get("delivery_id"),
        }
    )
    data = compact(
        {
            "action": "completed",
            # The actor is the student who took the exam; names, email and username stay out.
            "learner": compact({"id": _id(actor["id"]), "type": actor.get("type") or None}),
            "assessment": compact(
                {
                    "id": _id(obj["examId"]),
                    "is_auto_grading_on": _flag(obj.get("isAutoGradingOn")),
                }
            ),
            "attempt": attempt,
            "course": _course(contexts.get("course")),
            "institution": _institution(contexts.get("ep")),
            "vendor": vendor,
        }
    )
    time = normalize_time(event["eventDate"], "/PAYLOAD/eventDate")
    # MESSAGE-ID names the message, eventId the event: the same event (same content) sent again
    # under another MESSAGE-ID is still one record; its id keeps MESSAGE-ID, as it always has.
    aliases = (f"eventId {vendor['event_id']} {content_digest(event)}",)
    return [
        CanonicalEvent(
            EventType.ATTEMPT_SUBMITTED,
            time,
            item.identity or "",
            data,
            attempt["id"],
            aliases=aliases,
        )
    ]


def _course(course: Any) -> dict[str, Any] | None:
    if not isinstance(course, dict) or course.get("id") is None:
        return None  # a canonical course is known by its id
    return compact(
        {
            "id": _id(course["id"]),
            "name": course.get("title") or None,
            "course_number": course.get("displayCourseCode") or None,
            "call_numbers": _ids(course.get("callNumbers")),
            "node_ids": _ids(course.get("nodes")),
        }
    )


def _institution(ep: Any) -> dict[str, Any] | None:
    """`{id: clientString, ep_id}`: the client string is the campus's primary identifier; the
    numeric ep id stands in for it only when it is missing."""
    if not isinstance(ep, dict):
        return None
    ep_id = _id(ep["id"]) if ep.get("id") is not None else None
    client_string = ep.get("clientString") or None
    if client_string is None and ep_id is None:
        return None
    return compact({"id": client_string or ep_id, "ep_id": ep_id})


def _id(value: Any) -> str:
    """Ids arrive as numbers or numeric strings; canonical ids are strings (`123456`, whether
    sent as 123456, 123456.0 or "123456")."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def _ids(values: Any) -> list[str] | None:
    return [_id(v) for v in values] if isinstance(values, list) else None


def _flag(value: Any) -> bool | None:
    """A boolean, also from "true"/"false" strings; anything else (null) is unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _comment(value: Any) -> str | None:
    """The comment on the student exam; Pearson's example sends " " for none: blank is none."""
    return value if isinstance(value, str) and value.strip() else None


def _time(value: Any, path: str) -> str | None:
    return normalize_time(value, path) if isinstance(value, str) and value else None
