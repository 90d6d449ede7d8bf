"""Safety limits on what a request body may hold, shared by the pipeline and the vendor decoders.

A body is already bounded in size while it is read (`server.max_body_bytes`); these limits bound
what a body of that size can make the gateway do. They are fixed, not settings: each is far above
what a real sender posts (a batch of thousands of events is a few levels deep) and far
below what would cost memory or time.

- JSON nests at most `MAX_JSON_DEPTH` (64) levels of objects and arrays, and one object or array
  holds at most `MAX_JSON_ITEMS` (10,000) members.
- A JSON object that repeats a key is refused: orjson would keep the last value, another reader
  may keep the first, and the event a downstream consumer sees must be the one the sender meant.
- Integers must fit in 64 bits (what Kafka consumers in every language can read exactly, and what
  orjson writes), and numbers must fit in a double (`1e400` is no number a consumer can use).
- NaN and Infinity are not JSON, and every decoder here refuses them.
- A JSON body holds at most `MAX_JSON_NODES` (250,000) values, counted before parsing (a real
  event of the richest kind has about 50, so a 4 MiB batch of them about 110,000): a few MiB of
  `[{},{},...]` would otherwise cost a hundred MiB of Python objects.
- A url-encoded form holds at most `MAX_FORM_FIELDS` (10,000) fields, counted before parsing.
- Compressed bodies (`Content-Encoding` other than identity) are refused with 415: there is no
  decompression to bomb. So is a transfer coding other than `chunked` (`gzip, chunked`): the
  framing is undone by the HTTP parser, the coding would not be.
- JSON and forms are read as UTF-8: a `charset` other than UTF-8 (or its subset US-ASCII) on
  such a body is refused with 415, rather than read as UTF-8 and refused as malformed.

These checks of the head (`check_head`), the declared `Content-Length` included, run before any
of the body is read.

A body over a limit gets `UnsafePayload` (400 in the vendor's error format). Unlike a merely
malformed body (`InvalidJson`) it is not dead-lettered: nothing of it is published.

Bodies are read with jiter (Rust, strict UTF-8 and JSON) rather than orjson: it reports repeated
keys while it parses, so one reading does what took orjson plus a second, checking reading with
the standard library (145 -> 70 us for the benchmark's envelope, bench/RESULTS.md).
Records are still written with orjson.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import jiter

from gateway.errors import MalformedPayload, PayloadTooLarge, UnsafePayload, UnsupportedMediaType

MAX_JSON_DEPTH: Final = 64
MAX_JSON_ITEMS: Final = 10_000
MAX_FORM_FIELDS: Final = 10_000
FORM: Final = "application/x-www-form-urlencoded"
_IDENTITY: Final = frozenset({"", "identity"})
_UTF8: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
# Media types read as UTF-8 text whose charset is checked.
_TEXT_AS_UTF8: Final = frozenset({"application/json", FORM})
MAX_JSON_NODES: Final = 250_000
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


def check_encoding(content_encoding: str | None) -> None:
    """Refuse a compressed body (415) before any of it is read."""
    if (content_encoding or "").strip().lower() not in _IDENTITY:
        raise UnsupportedMediaType(
            f"unsupported content encoding {content_encoding!r}: send the body uncompressed"
        )


def check_head(headers: Mapping[str, str], limit: int) -> str:
    """What a request's head says of its body, checked before any of it is read: its encodings
    (415), its declared length (over `limit`: 413; not a number: 400) and its charset (415).
    Returns the media type, lower-case and without parameters."""
    check_encoding(headers.get("content-encoding"))
    coding = headers.get("transfer-encoding")
    if coding is not None and coding.strip().lower() != "chunked":
        raise UnsupportedMediaType(
            f"unsupported transfer coding {coding[:64]!r}: only chunked is taken, uncompressed"
        )
    declared = headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise MalformedPayload(f"invalid Content-Length {declared[:64]!r}")
        if len(declared) > 18 or int(declared) > limit:  # 18 digits: no int() of a long string
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
    return media_type_of(headers.get("content-type", ""))


def media_type_of(content_type: str) -> str:
    """The media type of a Content-Type, lower-case and without parameters; raises
    UnsupportedMediaType for JSON or a form in a charset other than UTF-8."""
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if parameters and (media in _TEXT_AS_UTF8 or media.endswith("+json")):
        for parameter in parameters.split(";"):
            name, _, value = parameter.partition("=")
            charset = value.strip().strip('"').lower()
            if name.strip().lower() == "charset" and charset not in _UTF8:
                raise UnsupportedMediaType(
                    f"unsupported charset {charset[:40]!r}: send JSON and forms in UTF-8"
                )
    return media


def check_form(media_type: str, body: bytes) -> None:
    """Refuse a form with more than `MAX_FORM_FIELDS` fields, before anything parses it."""
    if media_type == FORM and body.count(b"&") >= MAX_FORM_FIELDS:
        raise UnsafePayload(f"the form has more than {MAX_FORM_FIELDS} fields")


class InvalidJson(ValueError):
    """Raised for a body that is not JSON (the reader's message says where and why). A signal,
    never answered as it is: the vendor's decoder answers `MalformedPayload` (or dead-letters)."""


# jiter's words for a broken byte sequence, in the words a sender searches for.
_READER_WORDS: Final = {"invalid unicode code point": "invalid UTF-8"}


def loads_json(body: bytes | str) -> Any:
    """One strict reading of a JSON body within the limits above.

    Raises `InvalidJson` for text that is not JSON (invalid UTF-8, NaN, Infinity, control
    characters in strings, trailing data) and `UnsafePayload` for JSON over a limit.
    """
    text = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    # An upper bound on the values (commas and brackets inside strings count too), taken before
    # parsing: what a body can make the parser allocate is bounded by it, not by the body's size.
    # A body of at most MAX_JSON_NODES bytes holds fewer such bytes than that: not counted.
    if len(text) > MAX_JSON_NODES and _values_bound(text) > MAX_JSON_NODES:
        raise UnsafePayload(f"the JSON has more than {MAX_JSON_NODES} values")
    try:
        # Only keys are cached (names repeat from event to event, values rarely do): the same
        # values for ~15% less time than caching every string.
        value = jiter.from_json(
            text, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys"
        )
    except ValueError as exc:
        message = str(exc)
        if message.startswith("Detected duplicate key"):
            raise UnsafePayload("a JSON object repeats a key") from None
        if message.startswith("recursion limit"):  # jiter stops at 200 levels
            raise UnsafePayload(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
        for words, ours in _READER_WORDS.items():
            message = message.replace(words, ours)
        raise InvalidJson(message) from None
    if isinstance(value, dict | list):
        _walk(value)
    elif type(value) is int or type(value) is float:
        _check_number(value)
    return value


def _values_bound(text: bytes) -> int:
    """The commas and opening brackets of `text`, in strings too: every value of the JSON but
    the first comes after one of them."""
    return text.count(b",") + text.count(b"[") + text.count(b"{")


def _walk(root: dict[str, Any] | list[Any]) -> None:
    """Check the depth and the size of every object and array under `root`, level by level, and
    every number in them."""
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
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is int or kind is float:
                    _check_number(child)
        level = below
        depth += 1


def _check_number(number: float) -> None:
    # jiter reads integers of any length exactly and too large a number as infinity.
    if type(number) is int:
        if not _INT64_MIN <= number <= _UINT64_MAX:
            # str() of an integer past 4,300 digits raises: only short ones are quoted whole.
            digits = str(number) if number.bit_length() < 1000 else "of 300 digits or more"
            shown = digits if len(digits) <= 24 else f"{digits[:20]}..."
            raise UnsafePayload(f"the integer {shown} does not fit in 64 bits")
    elif number - number != 0:  # inf - inf is nan; jiter already refuses NaN itself
        raise InvalidJson("a number is too large for a double")
