"""The one place that knows the order of the steps every request takes.

authenticate -> decode -> validate the envelope -> split -> per event: validate, normalize
-> dedupe -> publish canonical records and dead letters together, await every ack -> reply.
Invalid or unmappable events of an authenticated request become dead letters; the request
still gets the vendor's success reply, because one bad event must not cost the sender the others.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog

from gateway.auth import Authenticator, Credentials
from gateway.canonical import (
    CONTENT_TYPE,
    CanonicalEvent,
    NormalizeContext,
    content_digest,
)
from gateway.canonical import to_record as canonical_record
from gateway.deadletter import RECORD_TOO_LARGE, to_record, value_limit
from gateway.dedupe import Deduper
from gateway.errors import (
    BrokerUnavailable,
    FieldError,
    GatewayError,
    MalformedPayload,
    NormalizeError,
    Rejection,
    UnsupportedMediaType,
    UnsupportedVersion,
)
from gateway.privacy import Privacy
from gateway.publisher import Publisher
from gateway.records import OutRecord
from gateway.schemas import SchemaSet
from gateway.settings import Settings
from gateway.vendors.base import Inbound, Item, Reply, Vendor, redact_url_queries_in

_CANONICAL_HEADERS: Final = (("content-type", CONTENT_TYPE.encode()),)
_CANONICAL_HEADERS_BYTES: Final = sum(len(k) + len(v) for k, v in _CANONICAL_HEADERS)
# Errors that mean "this body as a whole cannot be taken"; its bytes are dead-lettered for replay.
_BODY_ERRORS: Final = (MalformedPayload, UnsupportedMediaType, UnsupportedVersion)

log = structlog.get_logger("gateway.pipeline")

AcceptedHook = Callable[[str, Sequence[Item], str], Awaitable[None]]


@dataclass
class RequestStats:
    """What one request came to, for its log line and metrics."""

    tenant: str | None = None
    spooled: int = 0  # records kept in the local spool (Kafka did not acknowledge in time)
    accepted: int = 0
    deadlettered: int = 0
    duplicates: int = 0


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
    for item in items:
        rejection = validate_item(vendor, item, schemas)
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
            aliases.append(tuple(f"{ctx.source} {alias}" for alias in event.aliases))
    return Normalized(canonical, rejected, sources, aliases)


def validate_item(vendor: Vendor, item: Item, schemas: SchemaSet) -> Rejection | None:
    """None when the item satisfies its schema, else why it is rejected (with JSON pointers)."""
    errors = schemas.get(vendor.schema_ref(item.schema)).errors(item.payload)
    if not errors:
        return None
    message = f"not a valid {vendor.name} {item.schema}: {errors[0].message}"
    return Rejection("schema_violation", message, errors)


class Pipeline:
    """Runs a vendor's request through the steps, with the gateway's shared services."""

    def __init__(
        self,
        settings: Settings,
        schemas: SchemaSet,
        authenticator: Authenticator,
        deduper: Deduper,
        publisher: Publisher,
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

    @classmethod
    def for_settings(cls, settings: Settings, publisher: Publisher) -> Pipeline:
        """The pipeline with the services built from the settings (schemas, auth, dedupe)."""
        return cls(
            settings,
            SchemaSet(),
            Authenticator(settings.tenants, settings),
            Deduper(settings.dedupe.window_seconds, settings.dedupe.max_entries),
            publisher,
        )

    @property
    def schemas(self) -> SchemaSet:
        """The compiled schemas this pipeline validates with."""
        return self._schemas

    def on_accepted(self, vendor: str, hook: AcceptedHook) -> None:
        """Run `hook` after each published request of `vendor`, before the sender is answered."""
        self._accepted[vendor] = hook

    def prepare(self, vendors: Sequence[Vendor]) -> None:
        """Compile every schema the vendors use and build their verifiers, so that start-up
        fails, not the first request."""
        self._auth.prepare(vendors)
        for vendor in vendors:
            names = (vendor.envelope_schema, *vendor.item_schemas)
            for name in filter(None, names):
                self._schemas.get(vendor.schema_ref(name))

    def authenticate(self, vendor: Vendor, inbound: Inbound) -> str:
        """The tenant of the request's credential (raises Unauthorized)."""
        presented = Credentials(inbound.headers, inbound.query, inbound.media_type, inbound.body)
        return self._auth.authenticate(vendor, presented)

    def authenticate_head(
        self, vendor: Vendor, headers: Mapping[str, str], query: Mapping[str, str], media: str
    ) -> str | None:
        """Before the body is read: the tenant if the head proves it, None if only the body
        can (raises Unauthorized when the head rules the request out; see gateway.auth)."""
        return self._auth.authenticate_head(vendor, headers, query, media)

    async def ingest(
        self,
        vendor: Vendor,
        inbound: Inbound,
        request_id: str,
        stats: RequestStats,
        tenant: str | None = None,
    ) -> Reply:
        """Take one request; returns the vendor's success reply or raises a GatewayError.
        `tenant`: the request was already authenticated as this tenant (not done twice)."""
        received_at = datetime.now(UTC)
        stats.tenant = tenant = tenant or self.authenticate(vendor, inbound)
        ctx = NormalizeContext(tenant, vendor.name, received_at, request_id)
        try:
            items = split_request(vendor, inbound, self._schemas)
        except _BODY_ERRORS as error:
            await self._dead_letter_body(vendor, ctx, inbound, error)
            stats.deadlettered = 1
            if vendor.accept_malformed:
                return vendor.success
            raise
        await self.publish_items(vendor, items, ctx, stats)
        hook = self._accepted.get(vendor.name)
        if hook is not None:
            await hook(tenant, items, request_id)
        return vendor.success

    async def publish_items(
        self,
        vendor: Vendor,
        items: Sequence[Item],
        ctx: NormalizeContext,
        stats: RequestStats,
        *,
        dead_letter: bool = True,
    ) -> Normalized:
        """Validate, normalize, dedupe and publish items that did not come from one HTTP body
        (an export file, dead letters being replayed) exactly as a request's items are.
        `dead_letter=False`: rejected items are only returned, not dead-lettered (again)."""
        normalized = normalize_items(
            vendor, items, ctx, self._schemas, self._settings.canonical.include_original
        )
        await self._publish(ctx, normalized, stats, dead_letter=dead_letter)
        return normalized

    async def _publish(
        self,
        ctx: NormalizeContext,
        normalized: Normalized,
        stats: RequestStats,
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
        claimed = await self._claim(keys)
        try:
            for item, record, record_keys in zip(normalized.sources, canonical, keys, strict=True):
                # A key not claimed was published already; one taken was taken by a copy of this
                # record earlier in the request.
                if not all(claimed.get(key) is False for key in record_keys):
                    stats.duplicates += 1
                    continue
                for key in record_keys:
                    claimed[key] = True
                key = record["partitionkey"].encode()
                value = orjson.dumps(record)
                if len(key) + len(value) > value_limit(room):
                    for claim in record_keys:
                        del claimed[claim]
                        self._deduper.settle(claim, published=False)
                    if dead_letter:
                        rejected.append((item, _too_large(len(key) + len(value), room)))
                    continue
                records.append(OutRecord(kafka.canonical_topic, key, value, _CANONICAL_HEADERS))
            letters = [self._dead_letter(ctx, rejection, item=item) for item, rejection in rejected]
            records = letters + records
            spooled = await self._publisher.publish(records)
        except BaseException:
            for claim in claimed:
                self._deduper.settle(claim, published=False)
            raise
        for claim, taken in claimed.items():
            self._deduper.settle(claim, published=taken)
        stats.deadlettered = len(letters)
        stats.accepted = len(records) - len(letters)
        stats.spooled = len(records) if spooled else 0

    async def _claim(self, keys: list[tuple[str, ...]]) -> dict[str, bool]:
        """Claim every key (ids and aliases) of a request's records; the keys claimed, each
        mapped to False until a record takes it. Claimed in one order for every request, so that
        two requests with the same events in other orders never wait on each other in a circle
        (each holding the claim the other waits for, for ever)."""
        claimed: dict[str, bool] = {}
        try:
            for key in sorted({key for record_keys in keys for key in record_keys}):
                if await self._deduper.claim(key):
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
        letter: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "reason": rejection.code,
            "message": rejection.message,
            "errors": [{"path": e.path, "message": e.message} for e in rejection.errors],
            "tenant": ctx.tenant,
            "vendor": ctx.vendor,
            "receivedat": ctx.received,
            "request_id": ctx.delivery_id,
        }
        if item is not None:
            letter["where"] = item.where
            letter["original"] = item.payload
            # What `gateway replay` needs to rebuild the item exactly, once the cause is fixed.
            # Request-level facts may hold a pre-signed URL (a bearer secret): never its query.
            meta = redact_url_queries_in(item.meta)
            letter["item"] = {"schema": item.schema, "identity": item.identity, "meta": meta}
        elif body is not None:
            letter.update(_original_body(body))
        letter = self._privacy.dead_letter(letter)
        return to_record(
            letter, self._settings.kafka.deadletter_topic, self._publisher.max_record_bytes
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
