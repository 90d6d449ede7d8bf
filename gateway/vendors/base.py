"""What a vendor module declares: its route, auth scheme, decoder, schemas, normalizer and replies.

Vendor modules are pure: they see an `Inbound` (bytes, media type, query, path parameters) and
return data. They import neither Starlette, aiokafka nor the logger; the pipeline does the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode

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
    # Scheme, host and port as the client addressed the gateway ("http://127.0.0.1:8080"),
    # for vendors whose answers hold absolute links (Canvas pagination).
    base_url: str = ""


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
    # True for senders that redeliver anything but success (Pearson, for 72 h): an authenticated
    # body that cannot be decoded is dead-lettered and answered with `success`, not a 4xx.
    accept_malformed: bool = False
    render_error: Callable[[GatewayError], Reply] = problem_reply
    # What a body that could not be split keeps in the dead-letter topic: the body without the
    # credentials or bearer secrets it may carry (a token field, a signature, pre-signed URLs).
    redact_body: Callable[[Inbound], bytes] | None = None
    # Content types of the POST body, for the OpenAPI description.
    media_types: tuple[str, ...] = ("application/json",)

    def schema_ref(self, name: str) -> str:
        """`<vendor>/<file>#/$defs/<name>`: how the schema set finds an entry point."""
        return f"{self.name}/{self.schema_file}#/$defs/{name}"


@dataclass(frozen=True, slots=True)
class ExtraRoute:
    """A further route of a vendor, served by a component (e.g. Canvas's quiz log on GET).

    The app authenticates it in the vendor's scheme first; `handler` gets the request and the
    tenant, and answers (errors as GatewayError, rendered in the vendor's format).
    """

    vendor: str
    path: str
    method: str
    handler: Callable[[Inbound, str], Awaitable[Reply]]


class Component(Protocol):
    """Stateful machinery of one vendor, with a lifecycle: read models, background downloads.

    Built by `gateway.components.build_components`, started after the Kafka producer and stopped
    before it. `accepted` runs after a request of its vendor was published and before the sender
    is answered, so whatever it persists there is durable when the sender gets its success.
    """

    vendor: str

    async def start(self) -> None:
        """Start background work."""

    async def stop(self) -> None:
        """Stop background work and release resources."""

    def routes(self) -> Sequence[ExtraRoute]:
        """Routes this component serves."""

    async def accepted(self, tenant: str, items: Sequence[Item], request_id: str) -> None:
        """A request of this vendor was accepted and published."""


REDACTED: Final = "[redacted]"
_URL_QUERY: Final = re.compile(rb"(https?://[^\s\"'?<>]+)\?[^\s\"'<>]*")


def redact_form_fields(*names: str) -> Callable[[Inbound], bytes]:
    """A `redact_body` for url-encoded forms: the values of the named fields are replaced."""
    wanted = {name.lower() for name in names}

    def redact(inbound: Inbound) -> bytes:
        try:
            pairs = parse_qsl(inbound.body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return REDACTED.encode()  # cannot tell where the fields are: keep none of it
        if not any(k.lower() in wanted for k, _ in pairs):
            return inbound.body  # nothing to hide: kept byte for byte
        kept = [(k, REDACTED if k.lower() in wanted else v) for k, v in pairs]
        return urlencode(kept).encode()

    return redact


def redact_url_queries(inbound: Inbound) -> bytes:
    """A `redact_body` that removes the query string of every URL (pre-signed URLs' secrets)."""
    return _URL_QUERY.sub(rb"\1?" + REDACTED.encode(), inbound.body)


def redact_url_queries_in(value: Any) -> Any:
    """`value` with the query string of every URL in its strings redacted (lists, dicts too)."""
    if isinstance(value, str):
        return _URL_QUERY.sub(rb"\1?" + REDACTED.encode(), value.encode()).decode()
    if isinstance(value, Mapping):
        return {key: redact_url_queries_in(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_url_queries_in(item) for item in value]
    return value
