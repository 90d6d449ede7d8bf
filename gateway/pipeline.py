"""The one place that knows the order of the steps every request takes, and runs them.

admission (rate limits, the head's framing, the unverified pool, the slots in flight) -> the
body (size, time) -> authenticate (the head's credential, then the whole request where the head
did not prove it: one place, `Pipeline._read`) -> decode -> validate the envelope -> split -> per
event: validate, normalize -> privacy -> dedupe -> publish canonical records and dead letters
together, await every ack -> the reply, its log line and metrics (gateway/boundary.py).
Invalid or unmappable events of an authenticated request become dead letters; the request
still gets the vendor's success reply, because one bad event must not cost the sender the others.

The HTTP layer (gateway/app.py) gives a request's `Head` and a reader of its body, and gets a
`Reply` back: it decides nothing. Items that did not come in one body (an export file, dead
letters being replayed) take the steps from validation on (`publish_items`), counted in the same
`Tally`.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson
import structlog

from gateway.admission import Admission
from gateway.auth import Authenticator, Credentials
from gateway.boundary import Boundary
from gateway.canonical import (
    CONTENT_TYPE,
    CanonicalEvent,
    NormalizeContext,
    content_digest,
)
from gateway.canonical import to_record as canonical_record
from gateway.deadletter import RECORD_TOO_LARGE, DeadLetter, LetterItem, value_limit
from gateway.dedupe import Deduper
from gateway.errors import (
    BodyCut,
    BrokerUnavailable,
    FieldError,
    GatewayError,
    MalformedPayload,
    NormalizeError,
    PayloadTooLarge,
    Rejection,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
    UnsupportedVersion,
)
from gateway.kafka.publisher import Publisher
from gateway.kafka.records import OutRecord
from gateway.limits import FORM, check_form, check_head
from gateway.privacy import Privacy
from gateway.schemas import CompiledSchema, SchemaSet
from gateway.settings import Settings
from gateway.tracing import NO_TRACER, Span, Tracer
from gateway.vendors.base import (
    ExtraRoute,
    Inbound,
    Item,
    Reply,
    Vendor,
    redact_url_queries_in,
)

if TYPE_CHECKING:  # the app's metrics (prometheus-client): only their type here
    from gateway.observability import Metrics

_CANONICAL_HEADERS: Final = (("content-type", CONTENT_TYPE.encode()),)
_CANONICAL_HEADERS_BYTES: Final = sum(len(k) + len(v) for k, v in _CANONICAL_HEADERS)
# Errors that mean "this body as a whole cannot be taken"; its bytes are dead-lettered for replay.
_BODY_ERRORS: Final = (MalformedPayload, UnsupportedMediaType, UnsupportedVersion)

log = structlog.get_logger("gateway.pipeline")

AcceptedHook = Callable[[str, Sequence[Item], str], Awaitable[None]]


@dataclass(slots=True)
class Tally:
    """What publishing events came to, counted the same everywhere: one request's (its log
    line, metrics and span), one export's, one replay's. `Pipeline.publish_items` adds to it."""

    published: int = 0  # canonical records acknowledged by Kafka or spooled
    deadlettered: int = 0
    duplicates: int = 0  # events published already (within the dedupe window) or twice in one go
    spooled: int = 0  # records kept in the local spool (Kafka did not acknowledge in time)


# The tally of the ingesting extra route being served (see `Pipeline.request_tally`).
_REQUEST_TALLY: ContextVar[Tally | None] = ContextVar("request_tally", default=None)


@dataclass(frozen=True, slots=True)
class Normalized:
    """What the pure steps make of a request's items: canonical records (each with the item it
    came from, `sources[i]` for `canonical[i]`) and rejected items."""

    canonical: list[dict[str, Any]]
    rejected: list[tuple[Item, Rejection]]
    sources: list[Item]
    aliases: list[tuple[str, ...]]  # `aliases[i]`: the other identities of `canonical[i]`


def split_request(vendor: Vendor, inbound: Inbound, schemas: SchemaSet) -> Sequence[Item]:
    """Decode the body, check the vendor's envelope schema and split it into items.

    Raises the vendor's MalformedPayload / UnsupportedMediaType / UnsupportedVersion.
    """
    decoded = vendor.decode(inbound)
    if vendor.envelope_schema:
        errors = schemas.get(vendor.schema_ref(vendor.envelope_schema)).errors(decoded)
        if errors:
            raise MalformedPayload(f"not a valid {vendor.name} {vendor.envelope_schema}", errors)
    return vendor.split(decoded)


def normalize_items(
    vendor: Vendor,
    items: Sequence[Item],
    ctx: NormalizeContext,
    schemas: SchemaSet,
    include_original: bool,
) -> Normalized:
    """Validate and normalize each item: the pure part of the pipeline (no I/O, no clock)."""
    canonical: list[dict[str, Any]] = []
    rejected: list[tuple[Item, Rejection]] = []
    sources: list[Item] = []
    aliases: list[tuple[str, ...]] = []
    found: dict[str, CompiledSchema] = {}  # each item schema, looked up once per call
    for item in items:
        schema = found.get(item.schema)
        if schema is None:
            schema = found[item.schema] = schemas.get(vendor.schema_ref(item.schema))
        rejection = _rejection(vendor, item, schema.errors(item.payload))
        if rejection is None:
            try:
                events = vendor.normalize(item, ctx)
            except NormalizeError as exc:
                errors = (FieldError(exc.path, exc.message),)
                rejection = Rejection("unmappable", f"cannot be normalized: {exc.message}", errors)
        if rejection is not None:
            rejected.append((item, rejection))
            continue
        digest = content_digest(item.payload)
        original = item.payload if include_original else None
        for event in events:
            identified = event if event.identity else _with_identity(event, digest)
            canonical.append(canonical_record(identified, ctx, digest, original))
            sources.append(item)
            also = event.aliases
            aliases.append(tuple(f"{ctx.source} {alias}" for alias in also) if also else ())
    return Normalized(canonical, rejected, sources, aliases)


def validate_item(vendor: Vendor, item: Item, schemas: SchemaSet) -> Rejection | None:
    """None when the item satisfies its schema, else why it is rejected (with JSON pointers)."""
    return _rejection(
        vendor, item, schemas.get(vendor.schema_ref(item.schema)).errors(item.payload)
    )


def _rejection(vendor: Vendor, item: Item, errors: tuple[FieldError, ...]) -> Rejection | None:
    if not errors:
        return None
    message = f"not a valid {vendor.name} {item.schema}: {errors[0].message}"
    return Rejection("schema_violation", message, errors)


class Head(NamedTuple):
    """A request before its body, as the HTTP layer hands it to the pipeline (gateway/app.py)."""

    method: str
    headers: Mapping[str, str]  # lower-case names
    query: Mapping[str, str]
    path_params: Mapping[str, Any]  # the route's parameters, made strings in the `Inbound`
    client: str  # the TCP peer's address: X-Forwarded-For is whatever the sender wants it to be
    request_id: str
    # Scheme, host and port as the client addressed the gateway, for routes whose answers hold
    # absolute links (extra routes); "" for the vendors' ingest routes.
    base_url: str = ""


# The body's chunks as they arrive, read once (gateway/app.py makes one per request). Raises
# BodyCut when the client hangs up before the end.
BodyReader = AsyncIterator[bytes]
Take = Callable[[Head, BodyReader], Awaitable[Reply]]


class Pipeline:
    """Runs a vendor's request through the steps, with the gateway's shared services.

    The HTTP layer calls `ingest_route(vendor)` and `extra_route(vendor, route)` once per route
    at start-up, and the function each returns once per request: it never raises (every error
    is the vendor's reply, see gateway.boundary). `publish_items` is the part after the body,
    for items that did not come in one (an export, dead letters being replayed)."""

    def __init__(
        self,
        settings: Settings,
        schemas: SchemaSet,
        authenticator: Authenticator,
        deduper: Deduper,
        publisher: Publisher,
        *,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._settings = settings
        self._schemas = schemas
        self._auth = authenticator
        self._deduper = deduper
        self._publisher = publisher
        self._accepted: dict[str, AcceptedHook] = {}
        # The tenants' PII policies, applied to every record and dead letter before it is
        # published (the spool and the canonical topic's readers only ever see the result).
        self._privacy = Privacy(settings.tenants)
        admission = admission or Admission(settings.server, settings.rate_limit)
        self._limiter = admission.limiter
        self._in_flight = admission.in_flight
        self._unverified = admission.unverified
        self._deadlines = admission.deadlines
        self._max_body = admission.max_body_bytes
        self._boundary = Boundary(metrics)
        self._tracer = tracer

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        publisher: Publisher,
        *,
        admission: Admission | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer = NO_TRACER,
    ) -> Pipeline:
        """The pipeline with the services built from the settings (schemas, auth, dedupe, and
        the admission limits unless `admission` is given). `metrics` and `tracer`: the app's."""
        return cls(
            settings,
            SchemaSet(),
            Authenticator(settings.tenants, settings),
            Deduper(settings.dedupe.window_seconds, settings.dedupe.max_entries),
            publisher,
            admission=admission,
            metrics=metrics,
            tracer=tracer,
        )

    @property
    def schemas(self) -> SchemaSet:
        """The compiled schemas this pipeline validates with."""
        return self._schemas

    def on_accepted(self, vendor: str, hook: AcceptedHook) -> None:
        """Run `hook` after each published request of `vendor`, before the sender is answered
        (after the hooks added before it: a vendor's feeds may have components too)."""
        previous = self._accepted.get(vendor)
        if previous is None:
            self._accepted[vendor] = hook
            return

        async def both(tenant: str, items: Sequence[Item], request_id: str) -> None:
            await previous(tenant, items, request_id)
            await hook(tenant, items, request_id)

        self._accepted[vendor] = both

    def verifier(self, vendor: Vendor) -> object:
        """The verifier built for `vendor`'s route, for its component to reach (a key cache
        it keeps fresh): typed by the vendor that knows what it built."""
        return self._auth.verifier(vendor)

    def prepare(self, vendors: Sequence[Vendor]) -> None:
        """Compile every schema the vendors use and build their verifiers, so that start-up
        fails, not the first request."""
        routes = [route for vendor in vendors for route in vendor.ingest_routes]
        self._auth.prepare(routes)
        for vendor in routes:
            names = (vendor.envelope_schema, *vendor.item_schemas)
            for name in filter(None, names):
                self._schemas.get(vendor.schema_ref(name))

    def ingest_route(self, vendor: Vendor) -> Take:
        """What a request to `vendor`'s route goes through, from its head to its reply (see
        `_take`), in a span of its own when tracing is on."""
        if self._tracer is NO_TRACER:
            return partial(self._take, vendor)
        tracer, path, attributes = self._tracer, vendor.path, {"gateway.vendor": vendor.name}

        async def traced(head: Head, body: BodyReader) -> Reply:
            with tracer.request_span(path, head.headers, **attributes) as span:
                return await self._take(vendor, head, body, span)

        return traced

    def extra_route(self, vendor: Vendor, route: ExtraRoute) -> Take:
        """What a request to one of `vendor`'s extra routes goes through (see `_serve`)."""
        return partial(self._serve, vendor, route)

    async def _take(
        self, vendor: Vendor, head: Head, body: BodyReader, span: Span | None = None
    ) -> Reply:
        """One request to `vendor`'s route, every step in order:

        1. admission: the client's failed-authentication limit (429), the head's framing (415,
           413, 400) and the credential as far as the head shows it (401);
        2. a request only its body can authenticate is read and authenticated in the unverified
           pool (503, 429); then the tenant's rate limit (429) and a slot in flight (503);
        3. the body, within the size limit and the body timeout (413, 408), the safety limits of
           a form (400), authenticated whole where the head did not prove it all (`_read`);
        4. decode, validate the envelope and split (400, 415, 422: the body is dead-lettered);
        5. per item: validate, normalize, privacy, dedupe; publish records and dead letters
           together, await every ack or the spool (503 when neither), then the vendor's
           component hook;
        6. the reply: the vendor's success, or its answer to the error (gateway.boundary), the
           request's log line, metrics and span.

        A request refused before it was taken (steps 1 and 2) is answered `connection: close`."""
        started = time.perf_counter()
        tally = Tally()
        tenant: str | None = None
        error: GatewayError | None = None
        taken = False
        try:
            media, tenant = self._admit(vendor, head)
            inbound = None
            if tenant is None:  # only the body proves who sent it: read in the unverified pool
                self._unverified.take(head.client)
                try:
                    inbound, tenant = await self._read(vendor, head, body, media, None)
                finally:
                    self._unverified.release(head.client)
            self._limiter.take(tenant, vendor.name)
            with self._in_flight:
                if inbound is None:
                    inbound, tenant = await self._read(vendor, head, body, media, tenant)
                taken = True
                ctx = NormalizeContext(tenant, vendor.name, datetime.now(UTC), head.request_id)
                try:
                    items = split_request(vendor, inbound, self._schemas)
                except _BODY_ERRORS as body_error:
                    await self._dead_letter_body(vendor, ctx, inbound, body_error)
                    tally.deadlettered += 1
                    if not vendor.accept_malformed:
                        raise
                else:
                    await self.publish_items(vendor, items, ctx, tally)
                    hook = self._accepted.get(vendor.name)
                    if hook is not None:
                        await hook(tenant, items, head.request_id)
            reply = vendor.success
        except GatewayError as refused:
            error = refused
        except Exception:
            error = self._boundary.failed(vendor, head.request_id)
        if error is not None:
            reply = self._refused(vendor, head, error, taken)
        self._boundary.ingested(
            vendor,
            request_id=head.request_id,
            method=head.method,
            tenant=tenant,
            status=reply.status,
            error=None if error is None else error.code,
            tally=tally,
            started=started,
        )
        if span is not None:
            _annotate(span, head.request_id, reply.status, error, tally, tenant=tenant)
        return reply

    async def _serve(
        self, vendor: Vendor, route: ExtraRoute, head: Head, body: BodyReader
    ) -> Reply:
        """One request to an extra route of `vendor` (a read model, its configuration):
        admitted, read and authenticated as its ingest route's requests are, then answered by
        the route's handler. A route that `ingests` also takes the tenant's rate limit and a
        slot in flight, and is logged and measured as an ingest request."""
        started = time.perf_counter()
        tenant: str | None = None
        error: GatewayError | None = None
        taken = False
        tally = Tally()
        counting = _REQUEST_TALLY.set(tally if route.ingests else None)
        try:
            media, tenant = self._admit(vendor, head)
            inbound = None
            if tenant is None:
                self._unverified.take(head.client)
                try:
                    inbound, tenant = await self._read(vendor, head, body, media, None)
                finally:
                    self._unverified.release(head.client)
            if route.ingests:
                self._limiter.take(tenant, vendor.name)
            with self._in_flight if route.ingests else nullcontext():
                if inbound is None:
                    inbound, tenant = await self._read(vendor, head, body, media, tenant)
                taken = True
                reply = await route.handler(inbound, tenant)
        except GatewayError as refused:
            error = refused
        except Exception:
            error = self._boundary.failed(vendor, head.request_id)
        finally:
            _REQUEST_TALLY.reset(counting)
        if error is not None:
            reply = self._refused(vendor, head, error, taken)
        code = None if error is None else error.code
        if route.ingests:
            self._boundary.ingested(
                vendor,
                request_id=head.request_id,
                method=head.method,
                tenant=tenant,
                status=reply.status,
                error=code,
                tally=tally,
                started=started,
                route=route.path,
            )
            return reply
        self._boundary.answered(
            request_id=head.request_id,
            method=head.method,
            route=route.path,
            vendor=vendor.name,
            tenant=tenant,
            status=reply.status,
            error=code,
            started=started,
        )
        return reply

    @staticmethod
    def request_tally() -> Tally:
        """The tally of the ingesting extra route being served, for its handler to publish
        with (its log line and metrics then count the events); a new one anywhere else."""
        return _REQUEST_TALLY.get() or Tally()

    def unrouted(
        self, method: str, request_id: str, error: GatewayError, route: str | None
    ) -> Reply:
        """A request no route takes (the router's 404, or 405 on `route`): answered in
        problem+json and logged like any other request."""
        started = time.perf_counter()
        reply = self._boundary.reply(None, error)
        self._boundary.answered(
            request_id=request_id,
            method=method,
            route=route,
            vendor=None,
            tenant=None,
            status=reply.status,
            error=error.code,
            started=started,
        )
        return reply

    def _admit(self, vendor: Vendor, head: Head) -> tuple[str, str | None]:
        """Everything checked before the body: the client's failed-authentication limit, the
        head's framing; returns the media type and, when the head proves the credential, the
        tenant (None when only the body can; Unauthorized when no body could make it valid)."""
        self._limiter.check_client(head.client)
        media = check_head(head.headers, self._max_body)
        return media, self._auth.authenticate_head(vendor, head.headers, head.query, media)

    async def _read(
        self, vendor: Vendor, head: Head, body: BodyReader, media: str, tenant: str | None
    ) -> tuple[Inbound, str]:
        """The request with its body, and its tenant. The body is refused as soon as it is known
        to exceed the size limit (the declared length was checked with the head; here, while
        streaming) or to take longer than the body timeout. Then the request is authenticated
        whole, the one place it is, when the head did not prove it (`tenant` None) or when it is
        a form: a form may hold a credential of its own (an `access_token`), and two that
        disagree are refused as they are without the head's check."""
        limit = self._max_body
        deadlines = self._deadlines
        chunks: list[bytes] = []
        size = 0
        task = deadlines.start()
        try:
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
                chunks.append(chunk)
        except BodyCut:  # fewer bytes than Content-Length said, then the client hung up
            raise MalformedPayload("the connection closed before the whole body arrived") from None
        except asyncio.CancelledError:
            if deadlines.stop(task):
                seconds = deadlines.seconds
                raise RequestTimeout(f"the body did not arrive within {seconds:g}s") from None
            raise
        finally:
            deadlines.stop(task)
        raw = b"".join(chunks)
        check_form(media, raw)  # before anything (authentication included) parses it
        params = head.path_params  # most routes have none
        inbound = Inbound(
            method=head.method,
            media_type=media,
            body=raw,
            headers=head.headers,
            query=head.query,
            path_params={k: str(v) for k, v in params.items()} if params else {},
            base_url=head.base_url,
        )
        if tenant is None or media == FORM:
            presented = Credentials(head.headers, head.query, media, raw)
            proven = self._auth.authenticate(vendor, presented)
            if not isinstance(proven, str):  # a scheme that may fetch a key first (a JWKS)
                proven = await proven
            tenant = tenant or proven
        return inbound, tenant

    def _refused(self, vendor: Vendor, head: Head, error: GatewayError, taken: bool) -> Reply:
        """The answer to a refused request; a failed authentication also counts against its
        client's failed-authentication limit."""
        if isinstance(error, Unauthorized):
            self._limiter.failed(head.client)
            self._boundary.refused_credential(vendor, head.request_id, error, head.client)
        return self._boundary.reply(vendor, error, taken=taken)

    async def publish_items(
        self,
        vendor: Vendor,
        items: Sequence[Item],
        ctx: NormalizeContext,
        tally: Tally,
        *,
        dead_letter: bool = True,
    ) -> Normalized:
        """Validate, normalize, dedupe and publish items, a request's or items that did not
        come from one HTTP body (an export file, dead letters being replayed) exactly alike, and
        add what became of them to `tally`. `dead_letter=False`: rejected items are only
        returned, not dead-lettered (again)."""
        normalized = normalize_items(
            vendor, items, ctx, self._schemas, self._settings.canonical.include_original
        )
        await self._publish(ctx, normalized, tally, dead_letter=dead_letter)
        return normalized

    async def _publish(
        self,
        ctx: NormalizeContext,
        normalized: Normalized,
        tally: Tally,
        *,
        dead_letter: bool = True,
    ) -> None:
        kafka = self._settings.kafka
        rejected = list(normalized.rejected if dead_letter else ())
        canonical = list(map(self._privacy.canonical, normalized.canonical))
        aliases = normalized.aliases
        keys = [(record["id"], *also) for record, also in zip(canonical, aliases, strict=True)]
        records: list[OutRecord] = []
        # The cluster's limit, known before producing: a record over it is never sent (it would
        # be refused for good), its event is dead-lettered like any event that cannot be a record.
        room = self._publisher.max_record_bytes - _CANONICAL_HEADERS_BYTES
        limit = value_limit(room)
        topic = kafka.canonical_topic
        claimed = await self._claim(keys)
        try:
            for item, record, record_keys in zip(normalized.sources, canonical, keys, strict=True):
                # A key not claimed was published already; one taken was taken by a copy of this
                # record earlier in the request. (for/else: the `else` is a record whose keys
                # are all claimed and free.)
                for key in record_keys:
                    if claimed.get(key) is not False:
                        tally.duplicates += 1
                        break
                else:
                    for key in record_keys:
                        claimed[key] = True
                    record_key = record["partitionkey"].encode()
                    value = orjson.dumps(record)
                    if len(record_key) + len(value) <= limit:
                        records.append(OutRecord(topic, record_key, value, _CANONICAL_HEADERS))
                        continue
                    for claim in record_keys:
                        del claimed[claim]
                        self._deduper.settle(claim, published=False)
                    if dead_letter:
                        rejected.append((item, _too_large(len(record_key) + len(value), room)))
            letters = [self._dead_letter(ctx, rejection, item=item) for item, rejection in rejected]
            records = letters + records
            spooled = await self._publisher.publish(records)
        except BaseException:
            for claim in claimed:
                self._deduper.settle(claim, published=False)
            raise
        for claim, taken in claimed.items():
            self._deduper.settle(claim, published=taken)
        tally.deadlettered += len(letters)
        tally.published += len(records) - len(letters)
        if spooled:
            tally.spooled += len(records)

    async def _claim(self, keys: list[tuple[str, ...]]) -> dict[str, bool]:
        """Claim every key (ids and aliases) of a request's records; the keys claimed, each
        mapped to False until a record takes it. Claimed in one order for every request, so that
        two requests with the same events in other orders never wait on each other in a circle
        (each holding the claim the other waits for, for ever)."""
        claimed: dict[str, bool] = {}
        try:
            deduper = self._deduper
            for key in sorted({key for record_keys in keys for key in record_keys}):
                taken = deduper.claim_now(key)
                if taken is None:  # being published by another request: its outcome decides
                    taken = await deduper.claim(key)
                if taken:
                    claimed[key] = False
        except BaseException:
            for key in claimed:
                self._deduper.settle(key, published=False)
            raise
        return claimed

    def _dead_letter(
        self,
        ctx: NormalizeContext,
        rejection: Rejection,
        *,
        item: Item | None = None,
        body: Inbound | None = None,
    ) -> OutRecord:
        kept: dict[str, Any] = {}
        if item is not None:
            # What `gateway replay` needs to rebuild the item exactly, once the cause is fixed.
            # Request-level facts may hold a pre-signed URL (a bearer secret): never its query.
            meta = redact_url_queries_in(item.meta)
            kept = {
                "where": item.where,
                "original": item.payload,
                "item": LetterItem(item.schema, item.identity, meta),
            }
        elif body is not None:
            kept = _original_body(body)
        letter = DeadLetter(
            id=str(uuid.uuid4()),
            reason=rejection.code,
            message=rejection.message,
            errors=rejection.errors,
            tenant=ctx.tenant,
            vendor=ctx.vendor,
            receivedat=ctx.received,
            request_id=ctx.delivery_id,
            **kept,
        )
        letter = self._privacy.dead_letter(letter)
        return letter.to_record(
            self._settings.kafka.deadletter_topic, self._publisher.max_record_bytes
        )

    async def _dead_letter_body(
        self, vendor: Vendor, ctx: NormalizeContext, inbound: Inbound, error: GatewayError
    ) -> None:
        """Keep a body that cannot be split, without the credentials it may carry. For a vendor
        that will be told success anyway (`accept_malformed`) the dead letter must be
        acknowledged first: a broker failure then fails the request."""
        strict = vendor.accept_malformed
        if vendor.redact_body is not None:
            inbound = replace(inbound, body=vendor.redact_body(inbound))
        rejection = Rejection(error.code, error.message, error.errors)
        try:
            await self._publisher.publish([self._dead_letter(ctx, rejection, body=inbound)])
        except BrokerUnavailable:
            if strict:
                raise
            # The sender still learns what is wrong with its body; that matters more here.
            log.warning(
                "deadletter_failed", reason=error.code, vendor=ctx.vendor, tenant=ctx.tenant
            )


def _annotate(
    span: Span,
    request_id: str,
    status: int,
    error: GatewayError | None,
    tally: Tally,
    *,
    tenant: str | None,
) -> None:
    """What a request came to, on its span: counts and codes, never content."""
    span.set("http.response.status_code", status)
    span.set("gateway.request_id", request_id)
    if tenant:
        span.set("gateway.tenant", tenant)
    span.set("gateway.events.accepted", tally.published)
    span.set("gateway.events.deadlettered", tally.deadlettered)
    span.set("gateway.events.duplicates", tally.duplicates)
    span.set("gateway.events.spooled", tally.spooled)
    if error is not None:
        span.set("error.type", error.code)
    if status >= 500:  # OpenTelemetry's HTTP conventions: only server errors fail a server span
        span.fail(error.code if error is not None else str(status))


def _too_large(size: int, room: int) -> Rejection:
    return Rejection(
        RECORD_TOO_LARGE,
        f"the canonical record would be {size} bytes, over the {value_limit(room)} bytes "
        "Kafka's records may have on this cluster",
    )


def _with_identity(event: CanonicalEvent, digest: str) -> CanonicalEvent:
    """An event whose vendor gave it no id is identified by its content."""
    return replace(event, identity=f"sha256:{digest}")


def _original_body(inbound: Inbound) -> dict[str, Any]:
    """The whole body of a request that could not be split into events, kept byte for byte."""
    try:
        text, encoding = inbound.body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(inbound.body).decode("ascii"), "base64"
    return {
        "original_body": text,
        "original_body_encoding": encoding,
        "original_media_type": inbound.media_type,
    }
