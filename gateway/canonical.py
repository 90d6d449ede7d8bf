"""The canonical record: one CloudEvents 1.0 event (structured mode) per vendor event.

Normalizers return `CanonicalEvent`s (pure data); `to_record` turns one into the CloudEvent that
is published, adding what only the gateway knows: the deterministic id, tenant, receive time and
partition key. `docs/canonical-record.md` documents every field and the per-vendor mappings.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final
from urllib.parse import quote

import orjson

from gateway.errors import NormalizeError

SPECVERSION: Final = "1.0"
DATACONTENTTYPE: Final = "application/json"
CONTENT_TYPE: Final = "application/cloudevents+json"
DATASCHEMA: Final = "https://assessment-gateway.invalid/schemas/canonical/event.schema.json"
# Fixed forever: changing it would change every record id and defeat consumers' deduplication.
ID_NAMESPACE: Final = uuid.UUID("6f3b1c52-8a43-4d0e-9a57-3b0f2c8e91d4")
_NAMESPACE_BYTES: Final = ID_NAMESPACE.bytes
# A hex digit with its two top bits set to the RFC 4122 variant (10): 8, 9, a or b.
_VARIANT: Final = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
# The canonical timestamp exactly (what format_time writes): passed through unchanged.
_CANONICAL_TIME: Final = re.compile(r"\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-6]\d\.\d{3}Z\Z")


class EventType:
    """The canonical type vocabulary (docs/canonical-record.md lists what each means)."""

    ATTEMPT_STARTED: Final = "edu.assessment.attempt.started"
    ATTEMPT_PAUSED: Final = "edu.assessment.attempt.paused"
    ATTEMPT_RESUMED: Final = "edu.assessment.attempt.resumed"
    ATTEMPT_RESTARTED: Final = "edu.assessment.attempt.restarted"
    ATTEMPT_RESET: Final = "edu.assessment.attempt.reset"
    ATTEMPT_SUBMITTED: Final = "edu.assessment.attempt.submitted"
    ATTEMPT_GRADED: Final = "edu.assessment.attempt.graded"
    ITEM_STARTED: Final = "edu.assessment.item.started"
    ITEM_SKIPPED: Final = "edu.assessment.item.skipped"
    ITEM_COMPLETED: Final = "edu.assessment.item.completed"
    ITEM_VIEWED: Final = "edu.assessment.item.viewed"
    ITEM_ANSWERED: Final = "edu.assessment.item.answered"
    ITEM_FLAGGED: Final = "edu.assessment.item.flagged"
    SESSION_STARTED: Final = "edu.assessment.session.started"
    SESSION_FOCUS_LOST: Final = "edu.assessment.session.focus_lost"
    SESSION_FOCUS_GAINED: Final = "edu.assessment.session.focus_gained"
    PROCTORING_FLAGGED: Final = "edu.proctoring.flagged"
    ACTIVITY: Final = "edu.activity.generic"
    ENTITY_DESCRIBED: Final = "edu.entity.described"
    EVENT_VOIDED: Final = "edu.event.voided"

    ALL: Final = (
        ATTEMPT_STARTED,
        ATTEMPT_PAUSED,
        ATTEMPT_RESUMED,
        ATTEMPT_RESTARTED,
        ATTEMPT_RESET,
        ATTEMPT_SUBMITTED,
        ATTEMPT_GRADED,
        ITEM_STARTED,
        ITEM_SKIPPED,
        ITEM_COMPLETED,
        ITEM_VIEWED,
        ITEM_ANSWERED,
        ITEM_FLAGGED,
        SESSION_STARTED,
        SESSION_FOCUS_LOST,
        SESSION_FOCUS_GAINED,
        PROCTORING_FLAGGED,
        ACTIVITY,
        ENTITY_DESCRIBED,
        EVENT_VOIDED,
    )


@dataclass(frozen=True, slots=True)
class NormalizeContext:
    """What a normalizer may know besides the event: who sent it and when it arrived."""

    tenant: str
    vendor: str
    received_at: datetime
    delivery_id: str | None = None
    # Derived once per request, not once per record.
    received: str = field(init=False)
    source: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "received", format_time(self.received_at))
        object.__setattr__(self, "source", source_of(self.tenant, self.vendor))


@dataclass(frozen=True, slots=True)
class CanonicalEvent:
    """A vendor event mapped to the canonical vocabulary, before the gateway stamps it.

    `identity` is the vendor's own identity of the event (stable across re-sends); `data` holds
    the vendor-neutral fields (`action`, `learner`, `assessment`, ..., `vendor`). `aliases` are
    other identities of the same event, from other places of the vendor's message: a record
    whose alias was published already (within the dedupe window) is a duplicate too.
    """

    type: str
    time: str
    identity: str
    data: dict[str, Any]
    subject: str | None = None
    aliases: tuple[str, ...] = ()


def compact(fields: dict[str, Any]) -> dict[str, Any]:
    """Drop unknown (None) fields: absent means unknown, never invented. Callers pass a dict
    literal: one without an unknown field is returned as it is, not copied."""
    if None not in fields.values():
        return fields
    return {k: v for k, v in fields.items() if v is not None}


def parse_time(value: Any, path: str = "") -> datetime:
    """Parse an RFC 3339 / ISO 8601 timestamp; a timestamp without offset is taken as UTC."""
    if not isinstance(value, str) or not value:
        raise NormalizeError(f"expected a timestamp, got {value!r}", path)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise NormalizeError(f"{value!r} is not an ISO 8601 timestamp", path) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, the one timestamp format of canonical records."""
    u = moment.astimezone(UTC)
    # Formatted by hand: strftime costs several times more, on every record's hot path.
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond // 1000:03d}Z"
    )


def normalize_time(value: Any, path: str = "") -> str:
    """A vendor timestamp in the canonical format."""
    moment = parse_time(value, path)  # always parsed: a well-shaped "02-31" is still refused
    if _CANONICAL_TIME.match(value):
        return str(value)  # most senders already write it so: no formatting needed
    return format_time(moment)


def content_digest(payload: Any) -> str:
    """A digest of a vendor event's content, independent of key order and whitespace."""
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def record_id(tenant: str, vendor: str, identity: str, digest: str) -> str:
    """The deterministic CloudEvents id: a re-sent event gets the same id, a changed one does not.

    The content digest is part of it because CloudEvents requires `source` + `id` to be unique
    per distinct event, and an event that reuses a vendor id with other content is kept as new.
    """
    name = "\n".join((tenant, vendor, identity, digest)).encode("utf-8")
    # uuid.uuid5 by hand (RFC 4122 §4.3): same value, without building UUID objects. The SHA-1
    # in hex, its first 32 digits: the version digit is 5, the variant's bits 10 in the next.
    h = hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@lru_cache(maxsize=4096)  # a few tenants and vendors, one source each: made once
def source_of(tenant: str, vendor: str) -> str:
    """The CloudEvents `source`: a URI-reference naming tenant and vendor."""
    return f"/tenants/{quote(tenant, safe='')}/vendors/{quote(vendor, safe='')}"


def partition_key(tenant: str, data: dict[str, Any]) -> str:
    """Tenant + learner + assessment, so that one learner's attempt stays in order."""
    learner = _id_of(data.get("learner"))
    assessment = _id_of(data.get("assessment"))
    return f"{tenant}|{learner}|{assessment}"


def _id_of(entity: Any) -> str:
    if isinstance(entity, dict):
        value = entity.get("id")
        if isinstance(value, str):
            return value
    return ""


def to_record(
    event: CanonicalEvent, ctx: NormalizeContext, digest: str, original: Any = None
) -> dict[str, Any]:
    """The CloudEvent published for `event` (structured mode: this whole dict is the value)."""
    data = event.data
    if original is not None:
        data = {**data, "original": original}
    record: dict[str, Any] = {
        "specversion": SPECVERSION,
        "id": record_id(ctx.tenant, ctx.vendor, event.identity, digest),
        "source": ctx.source,
        "type": event.type,
        "time": event.time,
        "datacontenttype": DATACONTENTTYPE,
        "dataschema": DATASCHEMA,
        "tenant": ctx.tenant,
        "vendor": ctx.vendor,
        "receivedat": ctx.received,
        "partitionkey": partition_key(ctx.tenant, event.data),
        "data": data,
    }
    if event.subject:
        record["subject"] = event.subject
    return record
