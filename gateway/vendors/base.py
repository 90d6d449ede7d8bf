"""The contract between the gateway and a vendor package: what its `VENDOR = Vendor(...)` declares.

A vendor is one package (`gateway/vendors/<name>/`, or a third-party package registered in the
entry-point group `assessment_gateway.vendors`, see `gateway.vendors`) holding everything about
one sender: its route, its signature scheme's verifier, its decoder, schemas and pure
normalizer, its replies, its settings section, the keys of its payloads that hold a person, its
stateful component, its own commands and its documentation page. The shared modules reach all
of it through the `Vendor` object, never by a vendor's name.

Normalizers are pure: they see an `Inbound` (bytes, media type, query, path parameters) and
return data. A vendor package imports neither Starlette, a Kafka client nor the logger setup
(tests/unit/test_architecture.py checks it); the pipeline and the shared services do the rest.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qsl, urlencode

import orjson

from gateway.canonical import CanonicalEvent, NormalizeContext
from gateway.errors import GatewayError
from gateway.settings import Credential, Settings, SettingsSection

if TYPE_CHECKING:  # the pipeline imports this module: its type only, for components and commands
    from gateway.pipeline import Pipeline

__all__ = [
    "REDACTED",
    "Command",
    "CommandContext",
    "Commands",
    "Component",
    "ComponentContext",
    "Credentials",
    "Example",
    "ExtraRoute",
    "Inbound",
    "Item",
    "Reply",
    "SettingsSection",
    "Vendor",
    "Verifier",
    "VerifierContext",
    "problem_reply",
    "redact_form_fields",
    "redact_url_queries",
    "redact_url_queries_in",
]


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
    # for vendors whose answers hold absolute links (pagination links).
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
class Credentials:
    """What a request presents: headers (lower-case names), query, media type and raw body."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    media_type: str = ""
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class VerifierContext:
    """What a vendor's verifier is built from, once at start-up: every tenant's credentials of
    the vendor in its own scheme (Standard Webhooks credentials are the Authenticator's), with
    the tenant's name; the settings (for the vendor's own section); the clock (fixed in tests)."""

    credentials: tuple[tuple[str, Credential], ...]
    settings: Settings
    clock: Callable[[], datetime]


class Verifier(Protocol):
    """A vendor's signature scheme over its credentials (see `gateway.auth`). Secrets and
    signatures are compared in constant time; nothing it raises quotes a secret."""

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """What the head alone (headers, query, media type) proves, before the body is read:
        the tenant, when the credential travels there; None when only the body can prove it,
        once the head has all it must have. Raises Unauthorized when the head already rules the
        request out: no body could make it valid."""

    def verify(self, presented: Credentials) -> str | Awaitable[str]:
        """The tenant owning the presented credential; raises Unauthorized otherwise. A scheme
        whose keys are fetched (a JWKS) answers an awaitable instead, so that waiting for a key
        never blocks the event loop; the pipeline awaits it."""


@dataclass(frozen=True, slots=True)
class Example:
    """A request the dev configuration (gateway.dev.toml) takes: `gateway dev` prints it as a
    curl, to the route of the first vendor of the registry that has one."""

    headers: tuple[tuple[str, str], ...]
    body: str


@dataclass(frozen=True, slots=True)
class ComponentContext:
    """What a component may use: the settings and the pipeline (to publish what it ingests)."""

    settings: Settings
    pipeline: Pipeline


@dataclass(frozen=True, slots=True)
class ExtraRoute:
    """A further route of a vendor, served by its component (e.g. a read model on GET).

    The pipeline admits and authenticates it in the vendor's scheme first; `handler` gets the
    request and the tenant, and answers (errors as GatewayError, rendered in the vendor's
    format).
    """

    vendor: str
    path: str
    method: str
    handler: Callable[[Inbound, str], Awaitable[Reply]]
    # Its answers for the OpenAPI description (status code -> what it means); empty: 200, 401
    # and 404, what a read model answers.
    responses: Mapping[str, str] = field(default_factory=dict)
    # True for a route that takes events (its handler publishes them with
    # `Pipeline.publish_items`, counting them in `Pipeline.request_tally()`): it is admitted as
    # the ingest route is (the tenant's rate limit, a slot in flight) and logged and measured
    # as an ingest request, with what its events came to.
    ingests: bool = False


class Component(Protocol):
    """Stateful machinery of one vendor, with a lifecycle: read models, background downloads.

    Built by the app from `Vendor.component`, started after the Kafka producer and stopped
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


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a vendor's command gets from `gateway`: the settings (loaded, the logs set up), and
    a pipeline publishing to Kafka, for the time of an `async with` (no spool: a command waits
    for Kafka's own acknowledgement)."""

    settings: Settings
    publishing: Callable[[], AbstractAsyncContextManager[Pipeline]]


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a vendor's own, run as `gateway <vendor> <name>`: `arguments` adds its
    options to its parser, `run` runs it and answers the exit code."""

    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, CommandContext], int]


@dataclass(frozen=True, slots=True)
class Commands:
    """A vendor's commands, under `gateway <vendor>` (`help` says what they are about)."""

    help: str
    commands: tuple[Command, ...]


@dataclass(frozen=True, slots=True)
class Vendor:
    """Everything vendor-specific about one sender; the pipeline runs the steps in order."""

    name: str
    path: str
    # Built once per Authenticator from the vendor's credentials (see VerifierContext).
    verifier: Callable[[VerifierContext], Verifier]
    schema_file: str
    decode: Callable[[Inbound], Any]
    split: Callable[[Any], Sequence[Item]]
    normalize: Callable[[Item, NormalizeContext], list[CanonicalEvent]]
    success: Reply
    envelope_schema: str | None = None
    item_schemas: tuple[str, ...] = ()
    describe: Callable[[Settings], Reply] | None = None  # answers GET on `path`, if any
    # True for senders that redeliver anything but success (for days, some): an authenticated
    # body that cannot be decoded is dead-lettered and answered with `success`, not a 4xx.
    accept_malformed: bool = False
    render_error: Callable[[GatewayError], Reply] = problem_reply
    # What a body that could not be split keeps in the dead-letter topic: the body without the
    # credentials or bearer secrets it may carry (a token field, a signature, pre-signed URLs).
    redact_body: Callable[[Inbound], bytes] | None = None
    # Content types of the POST body, for the OpenAPI description, and its summary there
    # ("" = "Ingest <name> events").
    media_types: tuple[str, ...] = ("application/json",)
    summary: str = ""
    # Its documentation page: a path from the project's root (with an anchor if need be).
    doc: str = ""
    # Where its schema folder is; None: `schemas/<name>/` of this project. A third-party vendor
    # keeps its schemas in its own package.
    schema_dir: Path | None = None
    # Its `[section]` of the configuration: the dataclass, its checks and its credentials'.
    settings: SettingsSection[Any] | None = None
    # Keys of its payloads whose object is a person whatever its `type` says (gateway.privacy).
    person_keys: frozenset[str] = frozenset()
    # Its stateful part, built (not started) by the app: see Component.
    component: Callable[[ComponentContext], Component] | None = None
    # Its own commands, `gateway <name> <command>` (see Command).
    commands: Commands | None = None
    # A request the dev configuration takes, for `gateway dev` to show (see Example).
    example: Example | None = None
    # Keys of its payloads whose values are personal data whatever object holds them (a login,
    # an SIS id, an IP address, a user agent), beside the shared ones (gateway.privacy).
    personal_keys: frozenset[str] = frozenset()
    # Further ways the same sender delivers events, each on a route of its own with its own
    # verifier, decoder, splitter, normalizer and replies: each is declared as a Vendor of the
    # same `name` (its records, credentials, settings section and rate limits are this
    # vendor's) and the registry serves them beside it. Their `settings`, `commands` and `feeds`
    # are not read: this vendor's are.
    feeds: tuple[Vendor, ...] = ()
    # What `gateway dev` runs beside the gateway for the dev configuration to work (a local key
    # server, say), entered before the gateway starts and left after it stopped.
    dev_service: Callable[[Settings], AbstractContextManager[object]] | None = None

    def schema_ref(self, name: str) -> str:
        """`<vendor>/<file>#/$defs/<name>`: how the schema set finds an entry point. A name that
        is a whole reference already (`<vendor>/<file>#/$defs/<name>`: an item in another
        format the vendor also speaks) is taken as it is."""
        if "#" in name:
            return name
        return f"{self.name}/{self.schema_file}#/$defs/{name}"

    @property
    def ingest_routes(self) -> tuple[Vendor, ...]:
        """This vendor and its feeds: every route that ingests its events."""
        return (self, *self.feeds)


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
