"""Inspera as it calls the gateway: signed webhooks, export-finished notifications naming a
pre-signed URL, and `FakeInspera`, a loopback stand-in for Inspera's export API; and how the
golden driver (tests/support/golden.py) takes Inspera's fixtures: webhooks (in/webhooks/) are
posted as they are, export files (in/exports/) go through the streaming parser in small chunks,
as a download arrives, and `export_items`; both outcomes say which items name a download URL.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from gateway.pipeline import split_request
from gateway.vendors.base import Inbound, Item
from gateway.vendors.inspera import VENDOR
from gateway.vendors.inspera.normalize import ExportParser, download_url, export_items
from gateway.vendors.inspera.settings import InsperaSettings
from tests.support.golden import FIXTURES, JSON, GoldenRequest
from tests.support.http import FileServer, free_port
from tests.support.kafka import KafkaRecord
from tests.support.schemas import SCHEMAS

INSPERA = FIXTURES / "inspera" / "in"
WEBHOOKS = sorted((INSPERA / "webhooks").glob("*.json"))
EXPORTS = sorted((INSPERA / "exports").glob("*.json"))
EXPORT = INSPERA / "exports" / "test-events-export.json"
TEST_ID = "35199862"  # the test the export fixtures are about

FIXTURE_SECRET = b"FIXTURE-SECRET"  # in the fixture's attachment URLs


def export_finished(url: str, timestamp: str = "2024-05-14T12:31:07Z") -> dict[str, Any]:
    return {
        "contextObjectId": fresh_test_id(),
        "event": "event_by_candidates_export_finished",
        "timestamp": timestamp,
        "url": url,
    }


def signed_url(server: FileServer, secret: str, host: str | None = None) -> str:
    """A URL of the export on `server`, pre-signed with `secret` like S3's."""
    path = f"/exports/{uuid.uuid4().hex}.json"
    server.serve(path, EXPORT.read_bytes())
    return server.url(path, host) + f"?X-Amz-Expires=3600&X-Amz-Signature={secret}"


def export_log(event: str, test_id: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == event and line.get("test_id") == str(test_id)


SECRET = "dev-inspera-secret"
ROUTE = "/v1/inspera/webhooks"


def sign(body: bytes, secret: str = SECRET) -> str:
    """Inspera's X-Inspera-Signature: hex HMAC-SHA1 of the raw body."""
    return hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def fresh_test_id() -> int:
    """A test id no other test uses (records are told apart by it)."""
    return 10**8 + uuid.uuid4().int % (9 * 10**8)


def notification(event: str = "confirm_final_grades", **fields: Any) -> dict[str, Any]:
    """A webhook body for a test no other test uses."""
    body: dict[str, Any] = {
        "contextObjectId": fresh_test_id(),
        "event": event,
        "timestamp": "2024-05-14T12:00:00Z",
    }
    body.update(fields)
    return body


async def post(
    client: httpx.AsyncClient,
    body: bytes,
    signature: str | None = "sign",
    request_id: str | None = None,
    content_type: str = "application/json",
) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if signature == "sign":
        signature = sign(body)
    if signature is not None:
        headers["X-Inspera-Signature"] = signature
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return await client.post(ROUTE, content=body, headers=headers)


def of_test(records: list[KafkaRecord], test_id: Any) -> list[dict[str, Any]]:
    """The canonical records about test `test_id` (its webhook's and its export's)."""
    found = []
    for record in records:
        body = record.json()
        if body.get("subject") == str(test_id):
            found.append(body)
    return found


API_KEY = "api-key-FIXTURE-SECRET"


class FakeInspera:
    """A loopback stand-in for Inspera's API: token, export job states and the export file."""

    def __init__(self, client_id: str = "uni", api_key: str = API_KEY) -> None:
        self.client_id = client_id
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens_issued = 0
        self.valid_tokens: set[str] = set()
        self.ordered: list[str] = []  # test ids whose export was ordered
        self.polls: list[str] = []  # job ids asked about
        self.states: list[dict[str, Any]] = [{"status": "FINISHED", "progress": 100}]
        self.job_reply: dict[str, Any] = {"jobId": "job-7", "status": "RUNNING", "progress": 0}
        self.files: dict[str, bytes] = {}
        self.file_requests: list[dict[str, str]] = []  # headers of each file download
        self.revoke_after_poll = False
        self._server: ThreadingHTTPServer | None = None

    def file_url(self, name: str) -> str:
        return f"{self.url}/files/{name}?X-Amz-Signature=FIXTURE-SECRET-file"

    def start(self) -> FakeInspera:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if (
                    parts.path == "/api/authenticate/token/"
                    and query.get("grant_type") == "authorization_code"
                    and query.get("client_id") == fake.client_id
                    and self.headers.get("code") == fake.api_key
                ):
                    fake.tokens_issued += 1
                    token = f"token-{fake.tokens_issued}"
                    fake.valid_tokens.add(token)
                    self._json(200, {"access_token": token, "expires_in": 3600})
                else:
                    self._json(401, {"error": "invalid_grant"})

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                segments = parts.path.strip("/").split("/")
                if segments[0] == "files":
                    fake.file_requests.append(dict(self.headers))
                    body = fake.files.get(segments[1])
                    if body is None:
                        self._json(404, {})
                        return
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if token not in fake.valid_tokens:
                    self._json(401, {"error": "unauthorized"})
                    return
                if segments[:3] != ["api", "v1", "test"] or segments[4:] != ["events"]:
                    self._json(404, {})
                    return
                if "jobId" not in query:
                    fake.ordered.append(segments[3])
                    self._json(200, fake.job_reply)
                    return
                fake.polls.append(query["jobId"])
                if fake.revoke_after_poll:
                    fake.valid_tokens.discard(token)
                    fake.revoke_after_poll = False
                state = fake.states.pop(0) if len(fake.states) > 1 else fake.states[0]
                self._json(200, {"jobId": query["jobId"], **state})

            def _json(self, status: int, body: Any) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def webhook_items(path: Path) -> list[Item]:
    """The items of a webhook fixture, split as the pipeline splits a request."""
    inbound = Inbound("POST", JSON, path.read_bytes())
    return list(split_request(VENDOR, inbound, SCHEMAS))


def export_file_items(path: Path, chunk: int = 7) -> list[Item]:
    """The items of an export file, parsed as a stream of `chunk`-byte pieces."""
    data = path.read_bytes()
    parser = ExportParser()
    candidates: list[Any] = []
    for start in range(0, len(data), chunk):
        candidates.extend(parser.feed(data[start : start + chunk]))
    candidates.extend(parser.close())
    items: list[Item] = []
    for index, candidate in enumerate(candidates):
        items.extend(export_items(TEST_ID, candidate, index, parser.created))
    return items


def download_urls_found(items: Sequence[Item]) -> dict[str, Any]:
    """Which items name an export to download (the golden files' first field)."""
    keys = InsperaSettings().url_keys
    return {"download_url_found": [download_url(item, keys) is not None for item in items]}


def golden_requests(path: Path, relative: Path) -> list[GoldenRequest]:
    """Webhooks as posted; export files as the component reads a download."""
    if path.suffix != ".json":
        return []
    if relative.parts[0] == "exports":
        items = tuple(export_file_items(path))
        return [GoldenRequest(relative, items=items, head=download_urls_found)]
    inbound = Inbound("POST", JSON, path.read_bytes())
    return [GoldenRequest(relative, inbound, head=download_urls_found)]
