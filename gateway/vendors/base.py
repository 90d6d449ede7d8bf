"""What a vendor module declares: its route, auth scheme, decoder, schemas, normalizer and replies.

Vendor modules are pure: they see an `Inbound` (bytes, media type, query, path parameters) and
return data. They import neither Starlette, aiokafka nor the logger; the pipeline does the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.auth import Scheme
from gateway.canonical import CanonicalEvent, NormalizeContext
from gateway.errors import GatewayError
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class Inbound:
    """A request as a vendor's decoder sees it."""

    method: str
    media_type: str  # lower-case, without parameters ("application/json")
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    query: Mapping[str, str] = field(default_factory=dict)
    path_params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    """One vendor event split out of a request, to be validated and normalized on its own.

    `schema` names the schema entry point it must satisfy; `where` is its JSON pointer in the
    request body; `identity` is the vendor's own id of the event (None: derived from content);
    `meta` carries request-level facts the normalizer needs (e.g. the envelope's sensor).
    """

    payload: Any
    schema: str
    where: str = ""
    identity: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the sender gets back."""

    status: int
    body: bytes = b""
    media_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def problem_reply(error: GatewayError) -> Reply:
    """An RFC 7807 problem-details answer (the default error format)."""
    problem: dict[str, Any] = {
        "type": f"urn:assessment-gateway:error:{error.code}",
        "title": error.code.replace("_", " "),
        "status": error.status,
        "detail": error.message,
    }
    if error.errors:
        problem["errors"] = [{"pointer": e.path, "detail": e.message} for e in error.errors]
    return Reply(error.status, orjson.dumps(problem), "application/problem+json")


@dataclass(frozen=True, slots=True)
class Vendor:
    """Everything vendor-specific about one sender; the pipeline runs the steps in order."""

    name: str
    path: str
    auth: Scheme
    schema_file: str
    decode: Callable[[Inbound], Any]
    split: Callable[[Any], Sequence[Item]]
    normalize: Callable[[Item, NormalizeContext], list[CanonicalEvent]]
    success: Reply
    envelope_schema: str | None = None
    item_schemas: tuple[str, ...] = ()
    describe: Callable[[Settings], Reply] | None = None  # answers GET on `path`, if any
    render_error: Callable[[GatewayError], Reply] = problem_reply

    def schema_ref(self, name: str) -> str:
        """`<vendor>/<file>#/$defs/<name>`: how the schema set finds an entry point."""
        return f"{self.name}/{self.schema_file}#/$defs/{name}"
