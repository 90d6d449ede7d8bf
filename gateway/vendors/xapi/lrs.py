"""The LRS's statements resource as xAPI clients call it: `POST /xapi/statements` (answered 200
with the statements' ids), `PUT /xapi/statements?statementId=` (204) and `GET /xapi/about`.

The POST is served here, not by the vendor's ingest route, because its answer depends on the
request (the ids, some assigned by the gateway) and on what was accepted before: an id sent
again with the same statement is accepted (idempotent, published once: its canonical record id
is the same), with another statement it is 409 Conflict, and nothing of the request is
published (a batch is atomic). The ids already accepted, with a digest of their statement, are
kept in SQLite under `server.state_dir`, shared by the workers of one host: an id is claimed
(inserted) before its statement is published and released again when publishing fails, so a
retry after a 503 is never taken for a conflict.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import orjson

from gateway.canonical import NormalizeContext
from gateway.errors import MalformedPayload
from gateway.pipeline import Pipeline
from gateway.settings import Settings
from gateway.sqlite_store import SqliteStore
from gateway.vendors.base import ExtraRoute, Inbound, Item, Reply, Vendor
from gateway.vendors.xapi import normalize as xapi

T = TypeVar("T")

FILE_NAME: Final = "xapi-statements.sqlite3"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS statements (
    tenant TEXT NOT NULL,
    statement_id TEXT NOT NULL,   -- lower case: UUIDs compare without case
    digest TEXT NOT NULL,         -- SHA-256 of the statement as compared (describe_statement)
    PRIMARY KEY (tenant, statement_id)
);
"""
_VERSION_HEADERS: Final = {"x-experience-api-version": xapi.VERSION}
# What the statements routes answer besides success (every answer with X-Experience-API-Version).
_ERRORS: Final = {
    "400": "a statement the spec refuses (the whole batch), a wrong X-Experience-API-Version, "
    "or attachments as multipart parts",
    "401": "missing or invalid credentials (HTTP Basic key and secret, or bearer)",
    "409": "a statement id already stored with another statement",
    "413": "body over the size limit",
    "415": "not application/json",
    "429": "over the tenant's rate limit; retry after Retry-After",
    "503": "Kafka unavailable, or the gateway at its requests in flight; retry after Retry-After",
}


class StatementIds(SqliteStore):
    """The statement ids each tenant has had accepted, with the digest of their statement."""

    _what = "the xAPI statement store"

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        """Open (and create) the database."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # No fsync per request: a power loss may forget the last ids, so that a statement re-sent
        # with other content right then is published instead of refused; the records in Kafka,
        # not this table, are what the gateway promises to keep.
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")  # workers of one host share the file
        db.executescript(_SCHEMA)
        self._db = db

    def claim(
        self, tenant: str, statements: Sequence[tuple[str, str]]
    ) -> tuple[list[str], list[str]]:
        """Claim (id, digest) pairs in one transaction: the ids claimed now, and the ids held
        with another digest (conflicts; nothing is claimed then)."""
        db = self.db
        claimed: list[str] = []
        conflicts: list[str] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement_id, digest in statements:
                row = db.execute(
                    "SELECT digest FROM statements WHERE tenant = ? AND statement_id = ?",
                    (tenant, statement_id),
                ).fetchone()
                if row is None:
                    db.execute(
                        "INSERT INTO statements (tenant, statement_id, digest) VALUES (?, ?, ?)",
                        (tenant, statement_id, digest),
                    )
                    claimed.append(statement_id)
                elif row[0] != digest:
                    conflicts.append(statement_id)
            if conflicts:
                db.execute("ROLLBACK")
                return [], conflicts
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return claimed, []

    def release(self, tenant: str, statement_ids: Sequence[str]) -> None:
        """Forget ids claimed for statements that were not published after all."""
        self.db.executemany(
            "DELETE FROM statements WHERE tenant = ? AND statement_id = ?",
            [(tenant, statement_id) for statement_id in statement_ids],
        )


class Lrs:
    """The statements resource and the about resource of one gateway process."""

    vendor = xapi.NAME

    def __init__(self, settings: Settings, pipeline: Pipeline, vendor: Vendor) -> None:
        self._pipeline = pipeline
        self._vendor = vendor
        self._store = StatementIds(Path(settings.server.state_dir) / FILE_NAME)
        self._schema = pipeline.schemas.get(vendor.schema_ref(xapi.STATEMENT_SCHEMA))
        # The store's one connection, used from one thread: off the event loop, in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="xapi-statements")

    async def start(self) -> None:
        """Open the statement store."""
        await self._run(self._store.open)

    async def stop(self) -> None:
        """Close the statement store."""
        await self._run(self._store.close)
        self._thread.shutdown()

    async def _run(self, call: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)

    def routes(self) -> Sequence[ExtraRoute]:
        """POST and PUT statements, GET about."""
        post = {"200": "stored and acknowledged by Kafka: the JSON array of the statement ids"}
        put = {"204": "stored and acknowledged by Kafka"}
        return (
            ExtraRoute(
                xapi.NAME,
                xapi.STATEMENTS_PATH,
                "POST",
                self.post_statements,
                post | _ERRORS,
                ingests=True,
            ),
            ExtraRoute(
                xapi.NAME,
                xapi.STATEMENTS_PATH,
                "PUT",
                self.put_statement,
                put | _ERRORS,
                ingests=True,
            ),
            ExtraRoute(
                xapi.NAME,
                xapi.ABOUT_PATH,
                "GET",
                self.about,
                {"200": "the versions", "401": _ERRORS["401"]},
            ),
        )

    async def accepted(self, tenant: str, items: Sequence[Item], request_id: str) -> None:
        """Nothing to do: the statements routes record what they accept themselves."""

    async def post_statements(self, inbound: Inbound, tenant: str) -> Reply:
        """Store one statement or an array (xAPI): 200 with the statement ids in order."""
        taken = await self._take(inbound, tenant)
        if isinstance(taken, Reply):
            return taken
        return Reply(200, orjson.dumps(taken), "application/json", _VERSION_HEADERS)

    async def put_statement(self, inbound: Inbound, tenant: str) -> Reply:
        """Store one statement under the id in statementId (xAPI): 204."""
        taken = await self._take(inbound, tenant)
        if isinstance(taken, Reply):
            return taken
        return Reply(204, b"", None, _VERSION_HEADERS)

    async def about(self, inbound: Inbound, tenant: str) -> Reply:
        """The xAPI versions this LRS speaks (the about resource)."""
        body = orjson.dumps({"version": list(xapi.ABOUT_VERSIONS), "extensions": {}})
        return Reply(200, body, "application/json", _VERSION_HEADERS)

    async def _take(self, inbound: Inbound, tenant: str) -> list[str] | Reply:
        """Check, claim and publish a request's statements: their ids in order, or the 409
        answer. Raises MalformedPayload (400) for anything the spec refuses."""
        xapi.check_version(inbound.headers)
        statements = xapi.decode(inbound)
        items = xapi.split(statements)
        errors = [e for item in items for e in self._schema.errors(item.payload)]
        if errors:  # the decoder's checks cover the schema: a safety net, not a path
            raise MalformedPayload(
                f"not a valid xAPI statement: {errors[0].message}", tuple(errors)
            )
        pairs = [
            (
                item.identity.lower(),
                hashlib.sha256(xapi.describe_statement(item.payload)).hexdigest(),
            )
            for item in items
            if item.identity is not None
        ]
        claimed, conflicts = await self._run(self._store.claim, tenant, pairs)
        if conflicts:
            return conflict(conflicts)
        ctx = NormalizeContext(
            tenant, xapi.NAME, datetime.now(UTC), inbound.headers.get("x-request-id")
        )
        try:
            tally = self._pipeline.request_tally()  # the request's log line and metrics
            await self._pipeline.publish_items(self._vendor, items, ctx, tally)
        except BaseException:
            await asyncio.shield(self._run(self._store.release, tenant, claimed))
            raise
        return [statement["id"] for statement in statements]


def conflict(statement_ids: Sequence[str]) -> Reply:
    """409 Conflict (xAPI): ids already accepted with other statements, nothing published."""
    listed = ", ".join(statement_ids[:5])
    problem = {
        "type": "urn:assessment-gateway:error:conflict",
        "title": "conflict",
        "status": 409,
        "detail": f"statement ids already stored with other content: {listed}",
    }
    return Reply(409, orjson.dumps(problem), "application/problem+json", _VERSION_HEADERS)
