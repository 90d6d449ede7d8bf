"""Inspera test-events exports: downloaded in the background, stream-parsed, published.

An `event_by_candidates_export_finished` webhook names a pre-signed URL of the export. The
webhook is answered at once; `InsperaComponent.accepted` only records a download job in SQLite
(under `server.state_dir`, before the 200 is sent, so a restart loses nothing) and a background
task does the rest: `ExportDownloader` fetches the file from an allowed host only (https unless
`inspera.allow_http_downloads`, redirects only to allowed hosts, bounded size and time) into a
spool file, `ExportIngester` checks the whole file, then stream-parses it again and publishes one
canonical record per candidate event through the pipeline, in batches. Failed downloads are
retried with exponential backoff; a job is keyed by the webhook's identity, so a re-delivered
webhook is not ingested twice (and record ids are deterministic besides).

Pre-signed URLs are bearer secrets: they are stored only in the job table (0600, cleared once the
job ends) and never logged; errors are logged by kind and host, never by message, because HTTP
libraries put the URL in theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import httpx
import structlog

from gateway.canonical import NormalizeContext
from gateway.errors import BrokerUnavailable
from gateway.pipeline import Pipeline, Tally
from gateway.settings import Settings
from gateway.sqlite_store import SqliteStore
from gateway.vendors.base import ExtraRoute, Item
from gateway.vendors.inspera import VENDOR
from gateway.vendors.inspera.normalize import (
    EXPORT_FINISHED,
    NAME,
    ExportParser,
    InvalidExport,
    download_url,
    export_items,
    webhook_event,
    webhook_object_id,
)
from gateway.vendors.inspera.settings import InsperaSettings

JOBS_FILE: Final = "inspera-exports.sqlite3"
DOWNLOADS_DIR: Final = "inspera-downloads"
# A running job is claimed for this long and renewed while it progresses; a worker that died
# mid-job (kill -9) leaves it to be taken over once the lease runs out.
LEASE_SECONDS: Final = 120.0
_RENEW_EVERY_SECONDS: Final = 20.0
# Other workers' new jobs are noticed by polling the table at least this often.
_IDLE_POLL_SECONDS: Final = 2.0
_CHUNK_BYTES: Final = 64 * 1024
_READ_TIMEOUT_SECONDS: Final = 30.0
_CONNECT_TIMEOUT_SECONDS: Final = 10.0
# Statuses worth a retry: the server or the network may recover; any other 4xx will not
# (an expired pre-signed URL answers 403 for ever).
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})

log = structlog.get_logger("gateway.inspera")

Progress = Callable[[str, int, int | None], None]  # stage, done, total (None: unknown)


class DownloadError(Exception):
    """Raised when an export cannot be downloaded; `retryable` says if a later try may work.

    `reason` is a short machine-readable kind (`host_not_allowed`, `too_large`, `http_503`...);
    the URL is never part of it.
    """

    def __init__(self, reason: str, *, retryable: bool, host: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.host = host


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """True if `host` is one of `patterns`: exact names, or `*.suffix` for any subdomain."""
    host = host.lower().rstrip(".")
    for given in patterns:
        pattern = given.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def checked_url(url: str, settings: InsperaSettings) -> httpx.URL:
    """`url` if the gateway may download from it; raises DownloadError (not retryable)."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError):
        raise DownloadError("invalid_url", retryable=False) from None
    host = parsed.host
    if parsed.scheme not in ("https", "http") or not host:
        raise DownloadError("invalid_url", retryable=False, host=host or None)
    if parsed.scheme == "http" and not settings.allow_http_downloads:
        raise DownloadError("http_not_allowed", retryable=False, host=host)
    if parsed.userinfo:
        raise DownloadError("credentials_in_url", retryable=False, host=host)
    if not host_allowed(host, settings.download_hosts):
        raise DownloadError("host_not_allowed", retryable=False, host=host)
    return parsed


async def refuse_private_addresses(url: httpx.URL, settings: InsperaSettings) -> None:
    """Raise DownloadError when `url`'s host is, or resolves to, a loopback, private,
    link-local or otherwise non-public address (unless `allow_private_addresses`, dev only).

    Checked before every request, redirects included. The connection resolves the name again:
    a DNS answer changed in between is not caught here; the host allow-list narrows that.
    """
    if settings.allow_private_addresses:
        return
    host = url.host
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, url.port or (443 if url.scheme == "https" else 80)
            )
        except OSError:
            raise DownloadError("unresolvable_host", retryable=True, host=host) from None
        addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    if any(not address.is_global for address in addresses):
        raise DownloadError("private_address", retryable=False, host=host)


class ExportDownloader:
    """Fetches an export into a file: allowed hosts only, bounded redirects, size and time."""

    def __init__(self, settings: InsperaSettings) -> None:
        self._settings = settings

    async def download(self, url: str, target: Path, progress: Progress | None = None) -> int:
        """Write the file at `url` to `target`; returns its size in bytes."""
        settings = self._settings
        current = checked_url(url, settings)
        timeout = httpx.Timeout(_READ_TIMEOUT_SECONDS, connect=_CONNECT_TIMEOUT_SECONDS)
        # No proxies or .netrc from the environment: a pre-signed URL carries its own
        # authorization and must be sent nowhere else.
        async with httpx.AsyncClient(
            follow_redirects=False, timeout=timeout, trust_env=False
        ) as client:
            try:
                async with asyncio.timeout(settings.download_timeout_seconds):
                    for _ in range(settings.max_redirects + 1):
                        await refuse_private_addresses(current, settings)
                        async with client.stream("GET", current) as response:
                            if not response.is_redirect:
                                return await self._save(response, target, current.host, progress)
                            location = response.headers.get("location", "")
                        # Relative redirects resolve against the current URL; every hop is
                        # checked like the first, so a redirect cannot leave the allow-list.
                        current = checked_url(str(current.join(location)), settings)
            except TimeoutError:
                raise DownloadError("timeout", retryable=True, host=current.host) from None
            except httpx.TransportError as exc:
                reason = f"transport_{type(exc).__name__}"
                raise DownloadError(reason, retryable=True, host=current.host) from None
        raise DownloadError("too_many_redirects", retryable=False, host=current.host)

    async def _save(
        self, response: httpx.Response, target: Path, host: str, progress: Progress | None
    ) -> int:
        status = response.status_code
        if status != 200:
            retryable = status in _RETRY_STATUSES
            raise DownloadError(f"http_{status}", retryable=retryable, host=host)
        limit = self._settings.max_export_bytes
        declared = response.headers.get("content-length")
        total = int(declared) if declared and declared.isdigit() else None
        if total is not None and total > limit:
            raise DownloadError("too_large", retryable=False, host=host)
        size = 0
        with target.open("wb") as file:
            async for chunk in response.aiter_bytes(_CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise DownloadError("too_large", retryable=False, host=host)
                file.write(chunk)
                if progress is not None:
                    progress("downloading", size, total)
        return size


@dataclass
class IngestResult(Tally):
    """What one export came to: the pipeline's tally of its events, and what was read."""

    bytes: int = 0
    candidates: int = 0
    events: int = 0

    def log_ingested(self, **fields: object) -> None:
        """The `inspera_export_ingested` line (the webhook path and the CLI log the same)."""
        log.info(
            "inspera_export_ingested",
            bytes=self.bytes,
            candidates=self.candidates,
            events=self.events,
            published=self.published,
            deadlettered=self.deadlettered,
            duplicates=self.duplicates,
            **fields,
        )


class ExportIngester:
    """Download, check, stream-parse and publish one export (the webhook path and the CLI)."""

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self._settings = settings
        self._pipeline = pipeline
        self._downloader = ExportDownloader(settings.section(InsperaSettings))
        self.spool_dir = Path(settings.server.state_dir) / DOWNLOADS_DIR

    async def ingest(
        self,
        tenant: str,
        test_id: str,
        url: str,
        delivery_id: str,
        progress: Progress | None = None,
    ) -> IngestResult:
        """Publish every event of the export at `url` as tenant `tenant`'s."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        target = self.spool_dir / f"{uuid.uuid4().hex}.json.part"
        try:
            result = IngestResult()
            result.bytes = await self._downloader.download(url, target, progress)
            # Checked whole before anything is published: a truncated or malformed file
            # publishes nothing rather than half a test.
            created, result.candidates, total = await asyncio.to_thread(_check_export, target)
            ctx = NormalizeContext(tenant, NAME, datetime.now(UTC), delivery_id)
            await self._publish(
                target,
                test_id=test_id,
                created=created,
                ctx=ctx,
                result=result,
                total=total,
                progress=progress,
            )
            return result
        finally:
            target.unlink(missing_ok=True)

    async def _publish(
        self,
        path: Path,
        *,
        test_id: str,
        created: object,
        ctx: NormalizeContext,
        result: IngestResult,
        total: int,
        progress: Progress | None,
    ) -> None:
        parser = ExportParser()
        batch: list[Item] = []
        index = 0
        with path.open("rb") as file:
            while True:
                chunk = file.read(_CHUNK_BYTES)
                candidates = parser.feed(chunk) if chunk else parser.close()
                for candidate in candidates:
                    batch.extend(export_items(test_id, candidate, index, created))
                    index += 1
                    if len(batch) >= self._settings.section(InsperaSettings).publish_batch:
                        await self._flush(batch, ctx, result, total, progress)
                if not chunk:
                    break
        await self._flush(batch, ctx, result, total, progress)

    async def _flush(
        self,
        batch: list[Item],
        ctx: NormalizeContext,
        result: IngestResult,
        total: int,
        progress: Progress | None,
    ) -> None:
        if not batch:
            return
        await self._pipeline.publish_items(VENDOR, batch, ctx, result)
        result.events += len(batch)
        batch.clear()
        if progress is not None:
            progress("publishing", result.events, total)


def _check_export(path: Path) -> tuple[object, int, int]:
    """Parse the whole file once (raises InvalidExport): its `created`, candidates and events."""
    parser = ExportParser()
    events = 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK_BYTES):
            events += sum(_event_count(c) for c in parser.feed(chunk))
    events += sum(_event_count(c) for c in parser.close())
    return parser.created, parser.candidates, events


def _event_count(candidate: object) -> int:
    if isinstance(candidate, dict) and isinstance(candidate.get("events"), list):
        return len(candidate["events"])
    return 1  # split into one item (a dead letter)


@dataclass(frozen=True)
class ExportJob:
    """A pending download, as claimed from the job table."""

    key: str
    tenant: str
    test_id: str
    url: str
    request_id: str
    attempts: int


class ExportJobs(SqliteStore):
    """The download jobs in SQLite: durable across restarts, shared by the workers of a host.

    States: `pending` (due at `next_at`), `running` (claimed until `lease_until`), `done`,
    `failed`. The key is unique, so a job is taken once however often its webhook comes.
    """

    _what = "the Inspera job table"

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        """Open (and create) the table; the file is readable by its owner only (it holds URLs)."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self._path.exists()
        db = sqlite3.connect(self._path, isolation_level=None, timeout=5.0)
        if fresh:
            os.chmod(self._path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a job is on disk before the webhook's 200
        db.execute(
            """CREATE TABLE IF NOT EXISTS export_jobs (
                key TEXT PRIMARY KEY,
                tenant TEXT NOT NULL,
                test_id TEXT NOT NULL,
                url TEXT,
                request_id TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_at REAL NOT NULL,
                lease_until REAL NOT NULL DEFAULT 0,
                last_error TEXT,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )"""
        )
        self._db = db

    def add(self, key: str, tenant: str, test_id: str, url: str, request_id: str) -> bool:
        """Record a new job, due now; False if a job with this key exists (in any state)."""
        now = self._clock()
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO export_jobs (key, tenant, test_id, url, request_id, state,"
            " next_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
            (key, tenant, test_id, url, request_id, now, now, now),
        )
        return cursor.rowcount == 1

    def claim(self, lease_seconds: float = LEASE_SECONDS) -> ExportJob | None:
        """Take the job due first (or one whose worker's lease ran out), atomically."""
        now = self._clock()
        row = self.db.execute(
            "UPDATE export_jobs SET state = 'running', lease_until = ?, attempts = attempts + 1,"
            " updated_at = ? WHERE key = (SELECT key FROM export_jobs WHERE"
            " (state = 'pending' AND next_at <= ?) OR (state = 'running' AND lease_until < ?)"
            " ORDER BY next_at LIMIT 1)"
            " RETURNING key, tenant, test_id, url, request_id, attempts",
            (now + lease_seconds, now, now, now),
        ).fetchone()
        return ExportJob(*row) if row is not None else None

    def renew(self, key: str, lease_seconds: float = LEASE_SECONDS) -> None:
        """Extend the claim of a running job."""
        now = self._clock()
        self.db.execute(
            "UPDATE export_jobs SET lease_until = ?, updated_at = ? WHERE key = ?"
            " AND state = 'running'",
            (now + lease_seconds, now, key),
        )

    def retry(self, key: str, error: str, delay: float) -> None:
        """Back to pending, due in `delay` seconds."""
        now = self._clock()
        self.db.execute(
            "UPDATE export_jobs SET state = 'pending', next_at = ?, last_error = ?,"
            " updated_at = ? WHERE key = ?",
            (now + delay, error, now, key),
        )

    def release(self, key: str) -> None:
        """An interrupted try (the gateway stops): pending again at once, the try not counted."""
        now = self._clock()
        self.db.execute(
            "UPDATE export_jobs SET state = 'pending', next_at = ?, attempts = attempts - 1,"
            " updated_at = ? WHERE key = ? AND state = 'running'",
            (now, now, key),
        )

    def finish(self, key: str, state: str, error: str | None = None) -> None:
        """`done` or `failed` for good; the URL, a secret of no more use, is erased."""
        self.db.execute(
            "UPDATE export_jobs SET state = ?, url = NULL, last_error = ?, updated_at = ?"
            " WHERE key = ?",
            (state, error, self._clock(), key),
        )

    def state(self, key: str) -> tuple[str, int, str | None] | None:
        """(state, attempts, last error) of a job, or None."""
        row = self.db.execute(
            "SELECT state, attempts, last_error FROM export_jobs WHERE key = ?", (key,)
        ).fetchone()
        return (row[0], row[1], row[2]) if row is not None else None

    def next_due(self) -> float | None:
        """When the next pending job is due (epoch seconds), if any."""
        row = self.db.execute(
            "SELECT MIN(next_at) FROM export_jobs WHERE state = 'pending'"
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else None

    def purge(self, older_than_seconds: float) -> int:
        """Forget finished jobs older than the retention; returns how many."""
        cursor = self.db.execute(
            "DELETE FROM export_jobs WHERE state IN ('done', 'failed') AND updated_at < ?",
            (self._clock() - older_than_seconds,),
        )
        return cursor.rowcount


def backoff_seconds(attempts: int, settings: InsperaSettings) -> float:
    """Exponential backoff after `attempts` failed tries, capped, with a little jitter."""
    delay = settings.retry_initial_seconds * 2.0 ** max(attempts - 1, 0)
    capped = min(delay, settings.retry_max_seconds)
    return capped * random.uniform(0.8, 1.0)  # noqa: S311  # jitter, not cryptography


class InsperaComponent:
    """Queues export downloads from webhooks and works them off in the background."""

    vendor = NAME

    def __init__(self, settings: Settings, pipeline: Pipeline) -> None:
        self._settings = settings.section(InsperaSettings)
        self._ingester = ExportIngester(settings, pipeline)
        self.jobs = ExportJobs(Path(settings.server.state_dir) / JOBS_FILE)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the job table, clean up after the last run and start the worker."""
        # httpx logs each request's full URL at INFO: a pre-signed URL must never reach a log.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.jobs.open()
        self.jobs.purge(self._settings.job_retention_seconds)
        spool = self._ingester.spool_dir
        if spool.is_dir():
            for leftover in spool.glob("*.part"):
                # Another worker may be writing it right now: only stale files go.
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - leftover.stat().st_mtime > LEASE_SECONDS:
                        leftover.unlink()
        self._task = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """Stop the worker (a job in progress is released for the next start) and close."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.jobs.close()

    def routes(self) -> Sequence[ExtraRoute]:
        """No routes of its own: the webhook route is the vendor's."""
        return ()

    async def accepted(self, tenant: str, items: Sequence[Item], request_id: str) -> None:
        """Record a download job for each export-finished notification, before the 200."""
        queued = False
        for item in items:
            test_id = webhook_object_id(item)
            if webhook_event(item) != EXPORT_FINISHED or item.identity is None or not test_id:
                continue  # other events, or an invalid notification (dead-lettered)
            url = download_url(item, self._settings.url_keys)
            if url is None:
                log.warning(
                    "inspera_export_url_missing",
                    tenant=tenant,
                    test_id=test_id,
                    request_id=request_id,
                    url_keys=list(self._settings.url_keys),
                )
                continue
            key = f"{tenant}|{item.identity}"
            if self.jobs.add(key, tenant, test_id, url, request_id):
                queued = True
                log.info("inspera_export_queued", tenant=tenant, test_id=test_id, job=key)
            else:
                log.info("inspera_export_known", tenant=tenant, test_id=test_id, job=key)
        if queued:
            self._wake.set()

    async def _work(self) -> None:
        while True:
            try:
                job = self.jobs.claim()
            except sqlite3.Error as error:  # e.g. locked by another worker for too long
                log.warning("inspera_jobs_unavailable", error=type(error).__name__)
                await asyncio.sleep(_IDLE_POLL_SECONDS)
                continue
            if job is not None:
                try:
                    await self._run(job)
                except (sqlite3.Error, OSError) as error:
                    # The job stays claimed; its lease runs out and it is taken again.
                    log.warning("inspera_jobs_unavailable", error=type(error).__name__)
                    await asyncio.sleep(_IDLE_POLL_SECONDS)
                continue
            self._wake.clear()
            due = self.jobs.next_due()
            wait = _IDLE_POLL_SECONDS if due is None else due - time.time()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(max(wait, 0.01), _IDLE_POLL_SECONDS)):
                    await self._wake.wait()

    async def _run(self, job: ExportJob) -> None:
        renewed = time.monotonic()

        def heartbeat(stage: str, done: int, total: int | None) -> None:
            nonlocal renewed
            del stage, done, total
            if time.monotonic() - renewed > _RENEW_EVERY_SECONDS:
                self.jobs.renew(job.key)
                renewed = time.monotonic()

        fields = {"tenant": job.tenant, "test_id": job.test_id, "job": job.key}
        try:
            result = await self._ingester.ingest(
                job.tenant, job.test_id, job.url, job.request_id, heartbeat
            )
        except asyncio.CancelledError:
            self.jobs.release(job.key)
            raise
        except DownloadError as error:
            self._failed(job, error.reason, error.retryable, host=error.host, **fields)
        except InvalidExport as error:
            self._failed(job, "invalid_export", False, detail=error.message, **fields)
        except BrokerUnavailable:
            self._failed(job, "broker_unavailable", True, **fields)
        except Exception as error:  # any other failure: retried, never fatal
            self._failed(job, f"error_{type(error).__name__}", True, **fields)
        else:
            self.jobs.finish(job.key, "done")
            result.log_ingested(attempts=job.attempts, **fields)

    def _failed(self, claimed: ExportJob, reason: str, retryable: bool, **fields: object) -> None:
        settings = self._settings
        if retryable and claimed.attempts < settings.max_attempts:
            delay = backoff_seconds(claimed.attempts, settings)
            self.jobs.retry(claimed.key, reason, delay)
            log.warning(
                "inspera_export_retry",
                reason=reason,
                attempts=claimed.attempts,
                retry_in_seconds=round(delay, 3),
                **fields,
            )
            return
        self.jobs.finish(claimed.key, "failed", reason)
        log.error("inspera_export_failed", reason=reason, attempts=claimed.attempts, **fields)
