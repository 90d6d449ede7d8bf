"""Dead letters within Kafka's record size limit, and the dead letter of a record Kafka refused.

A dead letter keeps what the gateway could not publish as a canonical record (the event, or the
whole body of a request that could not be split) so that it can be read and replayed. Kafka
refuses a record over its topic's `max.message.bytes`, and a dead letter can be larger than
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
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from gateway.canonical import format_time
from gateway.records import RECORD_FRAMING_BYTES, OutRecord

HEADERS: Final = (("content-type", b"application/json"),)
RECORD_TOO_LARGE: Final = "record_too_large"
RECORD_INVALID: Final = "record_invalid"
# What a person needs to recognise the original; the rest is in its size and digest.
PREFIX_MAX_BYTES: Final = 64 * 1024
_MESSAGE_MAX_CHARS: Final = 1000
_ERRORS_KEPT: Final = 20
# Keys that hold the original, in whole (replaced together by `original_truncated`).
_ORIGINAL_KEYS: Final = ("original", "original_body", "original_body_encoding")


def value_limit(record_limit: int) -> int:
    """The most bytes a record's value may have on a cluster whose records may have
    `record_limit` bytes (room is left for the key, the headers and Kafka's framing)."""
    return max(record_limit - RECORD_FRAMING_BYTES, 1024)


def to_record(letter: dict[str, Any], topic: str, record_limit: int) -> OutRecord:
    """The Kafka record of `letter` on `topic`, within `record_limit` bytes, keyed by tenant and
    vendor (a sender's dead letters stay in order)."""
    key = f"{letter['tenant']}|{letter['vendor']}".encode()
    return OutRecord(topic, key, encode(letter, value_limit(record_limit)), HEADERS)


def encode(letter: dict[str, Any], limit: int) -> bytes:
    """`letter` as JSON of at most `limit` bytes (shrunk as the module says when it is larger)."""
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


def for_refused(record: OutRecord, reason: str, why: str) -> dict[str, Any]:
    """The dead letter of a record Kafka refused for good (`reason`: `record_too_large` or
    `record_invalid`; `why`: Kafka's words): the refused record whole, as `original`, with the
    tenant, vendor and times it carries (a canonical record says them all)."""
    try:
        value: Any = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        value = None
    facts = value if isinstance(value, dict) else {}
    letter: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "reason": reason,
        "message": f"Kafka refused the record for good ({why})",
        "errors": [],
        "tenant": str(facts.get("tenant") or "unknown"),
        "vendor": str(facts.get("vendor") or "unknown"),
        "receivedat": str(facts.get("receivedat") or format_time(datetime.now(UTC))),
        "request_id": str(facts.get("request_id") or ""),
        "topic": record.topic,
    }
    if value is not None:
        letter.update(original=value, where="")
    else:  # not JSON: nothing the gateway writes, but kept byte for byte all the same
        letter.update(
            original_body=base64.b64encode(record.value).decode("ascii"),
            original_body_encoding="base64",
            original_media_type="",
        )
    return letter
