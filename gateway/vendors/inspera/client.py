"""The pull side of Inspera: order a test-events export through Inspera's API, wait for it and
ingest the file through the same path as a webhook-announced export (`gateway inspera export`).

Inspera's API documentation (its swagger) was not available: the token call is documented
(`POST /api/authenticate/token/?grant_type=authorization_code&client_id=<tenant>` with the API key
in a header named `code`, answering `{access_token, expires_in}`), the export's endpoint is
`GET /v1/test/{testId}/events`, whose later calls with the `jobId` answer status, progress and,
once done, a pre-signed URL. Every path, parameter, field and status name is therefore a setting
of `InsperaSettings`, read here only. The API key, the token and the URL are never printed.

`gateway inspera export` (gateway/vendors/inspera/commands.py) runs `export_command` with the
settings loaded and the logs set up; the export is published through the pipeline it is given.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self, TextIO

import httpx
import structlog

from gateway.errors import BrokerUnavailable, ConfigError
from gateway.settings import Settings
from gateway.vendors.base import CommandContext
from gateway.vendors.inspera.exports import DownloadError, ExportIngester, IngestResult
from gateway.vendors.inspera.normalize import NAME, InvalidExport
from gateway.vendors.inspera.settings import InsperaSettings

# A token is renewed this long before Inspera says it expires.
_TOKEN_MARGIN_SECONDS: Final = 60.0
_API_TIMEOUT_SECONDS: Final = 30.0

log = structlog.get_logger("gateway.inspera")


class InsperaApiError(Exception):
    """Raised when Inspera's API refuses a call or answers what the settings do not describe."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ExportStatus:
    """One answer about an export job. `url` is a secret: never print it."""

    job_id: str
    status: str
    progress: float | None
    url: str | None
    done: bool
    failed: bool


def field(body: Any, path: str) -> Any:
    """`body`'s value at a dotted path (`data.jobId`), or None."""
    for part in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(part)
    return body


class InsperaClient:
    """Inspera's export API: token, order an export, poll its job."""

    def __init__(
        self, settings: InsperaSettings, api_key: str, http: httpx.AsyncClient | None = None
    ) -> None:
        if not settings.api_base_url or not settings.client_id:
            raise ConfigError("inspera.api_base_url and inspera.client_id must be set")
        self._settings = settings
        self._api_key = api_key
        self._http = http or httpx.AsyncClient(
            base_url=settings.api_base_url.rstrip("/"),
            timeout=_API_TIMEOUT_SECONDS,
            trust_env=False,
        )
        self._token: str | None = None
        self._token_expires = 0.0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def token(self) -> str:
        """A bearer token, fetched (again) when there is none or it is about to expire."""
        if self._token is not None and time.monotonic() < self._token_expires:
            return self._token
        settings = self._settings
        params = {"grant_type": "authorization_code", "client_id": settings.client_id}
        # The documented call carries both in the query; Inspera's R client sends them as a
        # form: both, so either reading works.
        response = await self._http.post(
            settings.token_path, params=params, data=params, headers={"code": self._api_key}
        )
        if response.status_code != 200:
            raise InsperaApiError(
                f"authentication failed: HTTP {response.status_code} from {settings.token_path}"
                " (check the API key and inspera.client_id)"
            )
        body = _json(response, settings.token_path)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise InsperaApiError(f"no access_token in the answer of {settings.token_path}")
        expires_in = body.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 3600.0
        self._token = token
        self._token_expires = time.monotonic() + max(lifetime - _TOKEN_MARGIN_SECONDS, 1.0)
        return token

    async def order_export(self, test_id: str) -> ExportStatus:
        """Order the test-events export of `test_id`; answers the new job."""
        return await self._events(test_id, None)

    async def export_status(self, test_id: str, job_id: str) -> ExportStatus:
        """The state of export job `job_id` of `test_id`."""
        return await self._events(test_id, job_id)

    async def wait_for_export(
        self,
        test_id: str,
        on_status: Callable[[ExportStatus], None] | None = None,
    ) -> ExportStatus:
        """Order the export and poll its job until it is done (raises if it fails or times out)."""
        settings = self._settings
        deadline = time.monotonic() + settings.export_timeout_seconds
        status = await self.order_export(test_id)
        while True:
            if on_status is not None:
                on_status(status)
            if status.failed:
                raise InsperaApiError(f"export job {status.job_id} failed: {status.status}")
            if status.done:
                if status.url is None:
                    raise InsperaApiError(
                        f"export job {status.job_id} is done but names no download URL"
                        f" (looked for {', '.join(settings.url_keys)})"
                    )
                return status
            if time.monotonic() > deadline:
                raise InsperaApiError(
                    f"export job {status.job_id} not done after"
                    f" {settings.export_timeout_seconds:g} s (last status {status.status!r})"
                )
            await asyncio.sleep(settings.poll_interval_seconds)
            status = await self.export_status(test_id, status.job_id)

    async def _events(self, test_id: str, job_id: str | None) -> ExportStatus:
        settings = self._settings
        path = settings.events_path.format(test_id=test_id, testId=test_id)
        params = {settings.job_id_param: job_id} if job_id is not None else {}
        response = await self._get(path, params)
        if response.status_code not in (200, 201, 202):
            raise InsperaApiError(f"HTTP {response.status_code} from {path}")
        return self._status(_json(response, path), job_id, path)

    async def _get(self, path: str, params: dict[str, str]) -> httpx.Response:
        response = await self._http.get(path, params=params, headers=await self._auth())
        if response.status_code == 401:  # expired early, or revoked: one fresh token
            self._token = None
            response = await self._http.get(path, params=params, headers=await self._auth())
        return response

    async def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}", "Accept": "application/json"}

    def _status(self, body: Any, job_id: str | None, path: str) -> ExportStatus:
        settings = self._settings
        found = field(body, settings.job_id_field)
        job = str(found) if found not in (None, "") else job_id
        if job is None:
            raise InsperaApiError(f"no {settings.job_id_field!r} in the answer of {path}")
        raw_status = field(body, settings.status_field)
        status = str(raw_status).strip().upper() if raw_status is not None else ""
        url = next(
            (
                value
                for value in (field(body, key) for key in settings.url_keys)
                if isinstance(value, str) and value
            ),
            None,
        )
        progress = field(body, settings.progress_field)
        done_statuses = {s.upper() for s in settings.done_statuses}
        failed_statuses = {s.upper() for s in settings.failed_statuses}
        return ExportStatus(
            job_id=job,
            status=status,
            progress=float(progress) if isinstance(progress, int | float) else None,
            url=url,
            # Without a status field, a URL is taken as the sign that the export is ready.
            done=status in done_statuses or (not status and url is not None),
            failed=status in failed_statuses,
        )


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise InsperaApiError(f"the answer of {path} is not JSON") from None


class ProgressBar:
    """A one-line progress bar on a terminal; on anything else (a log file, a pipe) one plain
    line per stage and per tenth of the way, so that logs stay readable."""

    def __init__(self, stream: TextIO = sys.stderr, enabled: bool = True, width: int = 30) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._width = width
        self._stage: str | None = None
        self._last_tenth = -1

    def update(self, stage: str, done: float, total: float | None, unit: str = "") -> None:
        """Show `done` of `total` (None: unknown) for `stage`."""
        if not self._enabled:
            return
        if stage != self._stage:
            if self._stage is not None and self._tty:
                self._stream.write("\n")
            self._stage, self._last_tenth = stage, -1
        fraction = min(done / total, 1.0) if total else None
        if fraction is None:
            line = f"{stage:<12} {_amount(done, unit)}"
            tenth = 0
        else:
            filled = round(fraction * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            amount = f"{_amount(done, unit)} / {_amount(total or 0, unit)}"
            line = f"{stage:<12} [{bar}] {fraction * 100:5.1f}%  {amount}"
            tenth = int(fraction * 10)
        if self._tty:
            self._stream.write(f"\r{line}")
        elif tenth != self._last_tenth:
            self._stream.write(f"{line}\n")
        self._last_tenth = tenth
        self._stream.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self._enabled and self._tty and self._stage is not None:
            self._stream.write("\n")
            self._stream.flush()
        self._stage = None


def _amount(value: float, unit: str) -> str:
    if unit == "B":
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if value >= size:
                return f"{value / size:.1f} {name}"
        return f"{int(value)} B"
    return f"{value:g}{unit}"


async def export_test(
    context: CommandContext,
    test_id: str,
    tenant: str,
    bar: ProgressBar,
    environ: dict[str, str] | None = None,
) -> IngestResult:
    """Order, wait for and ingest the test-events export of `test_id`, published as `tenant`'s.

    Raises InsperaApiError, DownloadError, InvalidExport or BrokerUnavailable.
    """
    settings = context.settings
    inspera = settings.section(InsperaSettings)
    env = os.environ if environ is None else environ
    api_key = env.get(inspera.api_key_env, "")
    if not api_key:
        raise ConfigError(
            f"the Inspera API key is read from ${inspera.api_key_env}, which is not set"
        )
    async with InsperaClient(inspera, api_key) as client:
        status = await client.wait_for_export(
            test_id, lambda s: bar.update("export job", s.progress or 0.0, 100.0, "%")
        )
    bar.finish()
    assert status.url is not None  # noqa: S101  # wait_for_export returns only with a URL
    # The command waits for Kafka's own acknowledgement: no spool, which belongs to the server.
    async with context.publishing() as pipeline:
        try:
            ingester = ExportIngester(settings, pipeline)
            result = await ingester.ingest(
                tenant,
                test_id,
                status.url,
                f"inspera-export-{status.job_id}",
                lambda stage, done, total: bar.update(
                    stage, done, total, "B" if stage == "downloading" else ""
                ),
            )
        finally:
            bar.finish()
    result.log_ingested(tenant=tenant, test_id=test_id, job=status.job_id)
    return result


EXPORT_ERRORS: Final = (InsperaApiError, DownloadError, InvalidExport, BrokerUnavailable)


def describe_error(error: BaseException) -> str:
    """A message for the terminal: never a URL, a token or a key."""
    if isinstance(error, DownloadError):
        where = f" (host {error.host})" if error.host else ""
        return f"the export could not be downloaded: {error.reason}{where}"
    if isinstance(error, InsperaApiError | InvalidExport | BrokerUnavailable):
        return error.message
    return type(error).__name__


def default_tenant(settings: Settings) -> str:
    """The tenant an export is published for when none is named: the one with Inspera
    credentials, if there is exactly one."""
    owners = [t.name for t in settings.tenants if any(c.vendor == NAME for c in t.credentials)]
    if len(owners) != 1:
        raise ConfigError(
            "name the tenant to publish the export for (--tenant): "
            f"{len(owners)} tenants have Inspera credentials"
        )
    return owners[0]


def export_command(
    context: CommandContext, test_id: str, tenant: str | None, progress: bool
) -> int:
    """`gateway inspera export`: 0 when the export was ingested, 1 when it could not be."""
    bar = ProgressBar(sys.stderr, enabled=progress)
    name = tenant or default_tenant(context.settings)
    try:
        result = asyncio.run(export_test(context, test_id, name, bar))
    except EXPORT_ERRORS as error:
        print(f"gateway: {describe_error(error)}", file=sys.stderr)
        return 1
    print(
        f"test {test_id}: {result.events} events of {result.candidates} candidates,"
        f" {result.published} published, {result.deadlettered} dead-lettered,"
        f" {result.duplicates} duplicates",
        file=sys.stderr,
    )
    return 0
