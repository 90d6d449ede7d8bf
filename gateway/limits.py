"""Safety limits on what a request body may hold, shared by the app and the vendor decoders.

A body is already bounded in size while it is read (`server.max_body_bytes`); these limits bound
what a body of that size can make the gateway do. They are fixed, not settings: each is far above
what a real sender posts (a Caliper batch of thousands of events is a few levels deep) and far
below what would cost memory or time.

- JSON nests at most `MAX_JSON_DEPTH` (64) levels of objects and arrays, and one object or array
  holds at most `MAX_JSON_ITEMS` (10,000) members.
- A JSON object that repeats a key is refused: orjson keeps the last value, another reader may
  keep the first, and the event a downstream consumer sees must be the one the sender meant.
- Integers must fit in 64 bits: orjson turns larger ones into floats, silently losing digits of
  an id or a score.
- NaN and Infinity are not JSON; orjson refuses them, and so does every decoder here.
- A JSON body holds at most `MAX_JSON_NODES` (250,000) values, counted before parsing (a real
  Caliper event has about 50, so a 4 MiB batch of them about 110,000): a few MiB of `[{},{},...]`
  would otherwise cost a hundred MiB of Python objects.
- A url-encoded form holds at most `MAX_FORM_FIELDS` (10,000) fields, counted before parsing.
- Compressed bodies (`Content-Encoding` other than identity) are refused with 415: there is no
  decompression to bomb.

A body over a limit gets `UnsafePayload` (400 in the vendor's error format). Unlike a merely
malformed body it is not dead-lettered: nothing of it is published.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

from gateway.errors import GatewayError, UnsupportedMediaType

MAX_JSON_DEPTH: Final = 64
MAX_JSON_ITEMS: Final = 10_000
MAX_FORM_FIELDS: Final = 10_000
FORM: Final = "application/x-www-form-urlencoded"
_IDENTITY: Final = frozenset({"", "identity"})
MAX_JSON_NODES: Final = 250_000
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


class UnsafePayload(GatewayError):
    """Raised when a body is over one of the safety limits (depth, members, duplicates, digits)."""

    status = 400
    code = "unsafe_payload"


def check_encoding(content_encoding: str | None) -> None:
    """Refuse a compressed body (415) before any of it is read."""
    if (content_encoding or "").strip().lower() not in _IDENTITY:
        raise UnsupportedMediaType(
            f"unsupported content encoding {content_encoding!r}: send the body uncompressed"
        )


def check_form(media_type: str, body: bytes) -> None:
    """Refuse a form with more than `MAX_FORM_FIELDS` fields, before anything parses it."""
    if media_type == FORM and body.count(b"&") >= MAX_FORM_FIELDS:
        raise UnsafePayload(f"the form has more than {MAX_FORM_FIELDS} fields")


def loads_json(body: bytes | str) -> Any:
    """`orjson.loads` within the limits above.

    Raises `orjson.JSONDecodeError` for text that is not JSON (as orjson does: invalid UTF-8,
    NaN, Infinity, numbers out of range) and `UnsafePayload` for JSON over a limit.
    """
    text = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    # An upper bound on the values (commas and brackets inside strings count too), taken before
    # parsing: what a body can make the parser allocate is bounded by it, not by the body's size.
    if text.count(b",") + text.count(b"[") + text.count(b"{") > MAX_JSON_NODES:
        raise UnsafePayload(f"the JSON has more than {MAX_JSON_NODES} values")
    try:
        value = orjson.loads(text)  # strict: UTF-8, no NaN/Infinity
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith(("depth limit", "recursion limit")):  # orjson stops at 1024
            raise UnsafePayload(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
        raise
    if isinstance(value, dict | list):
        _walk(value)  # bounds the depth before the second reading recurses
    # orjson neither reports repeated keys nor keeps integers past 64 bits exact: a second
    # reading (the standard library's C scanner) checks both, and its result is not kept.
    try:
        json.loads(text, object_pairs_hook=_unique_keys, parse_int=_int64)
    except ValueError as exc:  # never seen: orjson is the stricter reader; refused, not a 500
        raise UnsafePayload(f"the JSON reads differently in different parsers: {exc}") from None
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> None:
    if len(dict(pairs)) != len(pairs):
        raise UnsafePayload("a JSON object repeats a key")


def _int64(digits: str) -> None:
    if len(digits) > 18 and not _INT64_MIN <= int(digits) <= _UINT64_MAX:
        shown = digits if len(digits) <= 24 else f"{digits[:20]}..."
        raise UnsafePayload(f"the integer {shown} does not fit in 64 bits")


def _walk(root: dict[str, Any] | list[Any]) -> None:
    """Check the depth and the size of every object and array under `root`, level by level."""
    level: list[Any] = [root]
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            raise UnsafePayload(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels")
        below: list[Any] = []
        for node in level:
            if len(node) > MAX_JSON_ITEMS:
                raise UnsafePayload(f"an object or array has more than {MAX_JSON_ITEMS} members")
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
        depth += 1
