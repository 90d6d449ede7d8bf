"""Dead letters: what the dead-letter topic holds (`DeadLetter`, the fields of
schemas/canonical/deadletter.schema.json), written within Kafka's record size limit, read back,
and the dead letter of a record Kafka refused.

A dead letter keeps what the gateway could not publish as a canonical record (the event, or the
whole body of a request that could not be split) so that it can be read and replayed. The
pipeline writes them, the publisher writes those of the records Kafka refuses, `gateway replay`
rebuilds events from them and `gateway tail` prints them: all through `DeadLetter`, which is
written (`to_record`) and read (`from_record`) in one place, keys in the order they always had.

Kafka refuses a record over its topic's `max.message.bytes`, and a dead letter can be larger than
the body it keeps: JSON escaping turns one control byte into six (`\\u0001`). A dead letter that
does not fit is shrunk in two steps, each only if the one before did not suffice:

1. its messages are cut short and only its first errors are kept (a schema error may quote a
   value of megabytes, and a body may have thousands of errors);
2. its original is replaced by `original_truncated`: the original's size, its SHA-256 and a
   bounded prefix of it (what a person needs to find the sender's bug; replay needs the whole).

Sizes are measured on the encoded JSON, never on the body. What shrinking removed is said in the
letter (`truncated`), so that a reader never mistakes a prefix for the whole.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.canonical import format_time
from gateway.errors import FieldError
from gateway.kafka.records import RECORD_FRAMING_BYTES, OutRecord

HEADERS: Final = (("content-type", b"application/json"),)
RECORD_TOO_LARGE: Final = "record_too_large"
RECORD_INVALID: Final = "record_invalid"
# What a person needs to recognise the original; the rest is in its size and digest.
PREFIX_MAX_BYTES: Final = 64 * 1024
_MESSAGE_MAX_CHARS: Final = 1000
_ERRORS_KEPT: Final = 20
# Keys that hold the original, in whole (replaced together by `original_truncated`).
_ORIGINAL_KEYS: Final = ("original", "original_body", "original_body_encoding")


class _Absent(enum.Enum):
    ABSENT = enum.auto()


# `DeadLetter.original` of a letter that keeps no event (a body, or only a prefix): `None` is an
# event too (JSON's null).
ABSENT: Final = _Absent.ABSENT


@dataclass(frozen=True, slots=True)
class LetterItem:
    """How the gateway split an event out of its request: the schema entry point, the vendor's
    identity of the event and request-level facts (what `gateway replay` rebuilds it from)."""

    schema: str
    identity: str | None
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OriginalTruncated:
    """What stands for an original too large to keep (step 2 above): its size in bytes, its
    SHA-256 and a prefix (None: left out by a reader, as `gateway tail` does without
    `--with-original`)."""

    bytes: int
    sha256: str
    encoding: str
    prefix: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record of the dead-letter topic. Exactly one of: an event (`where` and `original`,
    with `item` when it can be rebuilt), a body (`original_body`, its encoding and media type) or,
    once shrunk, `original_truncated`. `topic`: the topic of a record Kafka refused for good
    (`original` is that record)."""

    id: str
    reason: str
    message: str
    errors: tuple[FieldError, ...]
    tenant: str
    vendor: str
    receivedat: str
    request_id: str | None
    where: str | None = None
    original: Any = ABSENT
    item: LetterItem | None = None
    original_body: str | None = None
    original_body_encoding: str | None = None
    original_media_type: str | None = None
    original_truncated: OriginalTruncated | None = None
    truncated: tuple[str, ...] = ()
    topic: str | None = None

    @classmethod
    def refused(cls, record: OutRecord, reason: str, why: str) -> DeadLetter:
        """The dead letter of a record Kafka refused for good (`reason`: `record_too_large` or
        `record_invalid`; `why`: Kafka's words): the refused record whole, as `original`, with
        the tenant, vendor and times it carries (a canonical record says them all)."""
        try:
            value: Any = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            value = None
        facts = value if isinstance(value, dict) else {}
        letter = cls(
            id=str(uuid.uuid4()),
            reason=reason,
            message=f"Kafka refused the record for good ({why})",
            errors=(),
            tenant=str(facts.get("tenant") or "unknown"),
            vendor=str(facts.get("vendor") or "unknown"),
            receivedat=str(facts.get("receivedat") or format_time(datetime.now(UTC))),
            request_id=str(facts.get("request_id") or ""),
            topic=record.topic,
        )
        if value is not None:
            return replace(letter, original=value, where="")
        # Not JSON: nothing the gateway writes, but kept byte for byte all the same.
        return replace(
            letter,
            original_body=base64.b64encode(record.value).decode("ascii"),
            original_body_encoding="base64",
            original_media_type="",
        )

    @classmethod
    def from_record(cls, value: bytes) -> DeadLetter:
        """The dead letter a record's value holds; ValueError when it is not a JSON object."""
        letter = orjson.loads(value)  # orjson.JSONDecodeError is a ValueError
        if not isinstance(letter, dict):
            raise ValueError("a dead letter is a JSON object")
        return cls.from_dict(letter)

    @classmethod
    def from_dict(cls, letter: Mapping[str, Any]) -> DeadLetter:
        """A dead letter from its JSON form. Lenient, as readers of a topic must be: a field that
        is missing is empty (a letter of another writer is still read as far as it goes)."""
        item = letter.get("item")
        summary = letter.get("original_truncated")
        return cls(
            id=letter.get("id", ""),
            reason=letter.get("reason", ""),
            message=letter.get("message", ""),
            errors=tuple(
                FieldError(e.get("path", ""), e.get("message", ""))
                for e in letter.get("errors") or ()
                if isinstance(e, dict)
            ),
            tenant=letter.get("tenant", ""),
            vendor=letter.get("vendor", ""),
            receivedat=letter.get("receivedat", ""),
            request_id=letter.get("request_id"),
            where=letter.get("where"),
            original=letter.get("original", ABSENT),
            item=LetterItem(item.get("schema", ""), item.get("identity"), item.get("meta") or {})
            if isinstance(item, dict)
            else None,
            original_body=letter.get("original_body"),
            original_body_encoding=letter.get("original_body_encoding"),
            original_media_type=letter.get("original_media_type"),
            original_truncated=OriginalTruncated(
                summary.get("bytes", 0),
                summary.get("sha256", ""),
                summary.get("encoding", ""),
                summary.get("prefix"),
            )
            if isinstance(summary, dict)
            else None,
            truncated=tuple(letter.get("truncated") or ()),
            topic=letter.get("topic"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The letter's JSON form, keys in the order the gateway has always written them."""
        letter: dict[str, Any] = {
            "id": self.id,
            "reason": self.reason,
            "message": self.message,
            "errors": [{"path": e.path, "message": e.message} for e in self.errors],
            "tenant": self.tenant,
            "vendor": self.vendor,
            "receivedat": self.receivedat,
            "request_id": self.request_id,
        }
        if self.topic is not None:  # a refused record: where it was refused, then the record
            letter["topic"] = self.topic
            if self.original is not ABSENT:
                letter["original"] = self.original
            if self.where is not None:
                letter["where"] = self.where
        else:
            if self.where is not None:
                letter["where"] = self.where
            if self.original is not ABSENT:
                letter["original"] = self.original
        if self.item is not None:
            item = self.item
            letter["item"] = {"schema": item.schema, "identity": item.identity, "meta": item.meta}
        if self.original_body is not None:
            letter["original_body"] = self.original_body
        if self.original_body_encoding is not None:
            letter["original_body_encoding"] = self.original_body_encoding
        if self.original_media_type is not None:
            letter["original_media_type"] = self.original_media_type
        if self.truncated:
            letter["truncated"] = list(self.truncated)
        summary = self.original_truncated
        if summary is not None:
            letter["original_truncated"] = {
                "bytes": summary.bytes,
                "sha256": summary.sha256,
                "encoding": summary.encoding,
                **({"prefix": summary.prefix} if summary.prefix is not None else {}),
            }
        return letter

    def to_record(self, topic: str, record_limit: int) -> OutRecord:
        """The Kafka record of this letter on `topic`, within `record_limit` bytes (shrunk as the
        module says when it is larger), keyed by tenant and vendor (a sender's dead letters stay
        in order)."""
        key = f"{self.tenant}|{self.vendor}".encode()
        return OutRecord(topic, key, encode(self.to_dict(), value_limit(record_limit)), HEADERS)

    def without_original(self) -> DeadLetter:
        """This letter without the vendor's event as sent (personal data): no `original`, no
        `original_body`, no prefix of a truncated original."""
        summary = self.original_truncated
        return replace(
            self,
            original=ABSENT,
            original_body=None,
            original_truncated=summary and replace(summary, prefix=None),
        )


def value_limit(record_limit: int) -> int:
    """The most bytes a record's value may have on a cluster whose records may have
    `record_limit` bytes (room is left for the key, the headers and Kafka's framing)."""
    return max(record_limit - RECORD_FRAMING_BYTES, 1024)


def encode(letter: dict[str, Any], limit: int) -> bytes:
    """`letter` (a `DeadLetter.to_dict`) as JSON of at most `limit` bytes (shrunk as the module
    says when it is larger)."""
    value = orjson.dumps(letter)
    if len(value) <= limit:
        return value
    shortened = _shortened(letter)
    value = orjson.dumps(shortened)
    if len(value) <= limit:
        return value
    return _with_prefix(shortened, limit)


def _shortened(letter: dict[str, Any]) -> dict[str, Any]:
    """Step 1: messages cut short, only the first errors kept; the original untouched."""
    out = dict(letter)
    out["message"] = _cut(str(letter.get("message", "")))
    errors = list(letter.get("errors", []))
    out["errors"] = [
        {"path": _cut(str(e.get("path", ""))), "message": _cut(str(e.get("message", "")))}
        for e in errors[:_ERRORS_KEPT]
    ]
    for key in ("where", "original_media_type"):
        if key in out:
            out[key] = _cut(str(out[key]))
    notes = ["messages shortened"]
    if len(errors) > _ERRORS_KEPT:
        notes.append(f"{len(errors) - _ERRORS_KEPT} more errors left out")
    out["truncated"] = notes
    return out


def _with_prefix(letter: dict[str, Any], limit: int) -> bytes:
    """Step 2: the original replaced by its size, digest and the longest prefix that fits."""
    raw, encoding = _original_bytes(letter)
    out = {k: v for k, v in letter.items() if k not in _ORIGINAL_KEYS and k != "item"}
    # `item` rebuilds the event for replay from a whole original: without one it is no use, and
    # it may itself be large (the event's own id).
    out["truncated"] = [*letter.get("truncated", []), "original cut to a prefix"]
    summary: dict[str, Any] = {
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "encoding": encoding,
        "prefix": "",
    }
    out["original_truncated"] = summary
    room = limit - len(orjson.dumps(out))
    size = min(room, PREFIX_MAX_BYTES, len(raw))
    while size > 0:
        summary["prefix"] = _prefix(raw, size, encoding)
        value = orjson.dumps(out)
        if len(value) <= limit:
            return value
        # Escaping made the prefix longer than its bytes: shrink it in the same proportion.
        size = size * room // (room + len(value) - limit) - 1
    summary["prefix"] = ""
    return orjson.dumps(out)


def _original_bytes(letter: dict[str, Any]) -> tuple[bytes, str]:
    """The original as bytes and how its prefix will be written (`utf-8` text or `base64`)."""
    if "original_body" in letter:
        body = str(letter["original_body"])
        if letter.get("original_body_encoding") == "base64":
            return base64.b64decode(body), "base64"
        return body.encode("utf-8", "surrogatepass"), "utf-8"
    return orjson.dumps(letter.get("original")), "utf-8"


def _prefix(raw: bytes, size: int, encoding: str) -> str:
    if encoding == "base64":
        return base64.b64encode(raw[: size * 3 // 4]).decode("ascii")
    return raw[:size].decode("utf-8", "ignore")  # a character cut in two is left out


def _cut(text: str) -> str:
    if len(text) <= _MESSAGE_MAX_CHARS:
        return text
    return f"{text[:_MESSAGE_MAX_CHARS]}... ({len(text)} characters)"
