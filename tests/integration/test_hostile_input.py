"""Hostile bodies against a real gateway: lying or missing lengths, chunked floods, compressed
bombs, JSON and forms built to exhaust memory or to be read two ways. Each gets a clear 4xx in
the vendor's own error format (never a 5xx, a hang or a crash), and the gateway keeps serving.
What is over a safety limit (gateway/limits.py) is not published at all, not even dead-lettered.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import socket
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest

from gateway.limits import MAX_FORM_FIELDS, MAX_JSON_DEPTH, MAX_JSON_ITEMS
from tests.support.gateway import TOKEN, Gateway, running_gateway
from tests.support.kafka import TopicReader

CALIPER = "/v1/caliper"
CANVAS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
INSPERA = "/v1/inspera/webhooks"
PEARSON = "/v1/pearson/eventing"
INSPERA_SECRET = "dev-inspera-secret"
FORM = "application/x-www-form-urlencoded"
PROBLEM = "application/problem+json"
LIMIT = 4 * 1024 * 1024  # server.max_body_bytes of gateway.dev.toml (the default)


# --- raw HTTP, for what an HTTP client library refuses to send ------------------------------


def exchange(gateway: Gateway, raw: bytes, *, half_close: bool = False) -> bytes:
    """Send `raw` bytes on one connection and read everything the gateway answers until it
    closes the connection or goes quiet (a kept-alive connection)."""
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the gateway answered and closed before reading it all: read its answer
        received = b""
        sock.settimeout(3)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass  # kept alive: everything was answered
        except ConnectionResetError:
            pass
    return received


def statuses(response: bytes) -> list[int]:
    """The status codes of every response in `response`, in order."""
    return [
        int(line.split()[1])
        for line in response.split(b"\r\n")
        if line.startswith(b"HTTP/1.1 ") and len(line.split()) > 1
    ]


def request_head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


CALIPER_HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def envelope(marker: str, data: Any = None) -> bytes:
    """A Caliper envelope carrying `marker` (to look for it in the topics afterwards)."""
    return orjson.dumps(
        {
            "sensor": f"https://example.edu/sensors/{marker}",
            "sendTime": "2026-11-26T10:00:01.000Z",
            "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
            "data": data if data is not None else [],
        }
    )


def alive(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.admin_url}/healthz", timeout=5).status_code == 200


# --- framing ----------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    gateway: Gateway,
) -> None:
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Content-Length": str(10**12)})
    response = exchange(gateway, head)
    assert statuses(response)[:1] == [413]
    assert PROBLEM.encode() in response
    alive(gateway)


def test_a_chunked_body_over_the_limit_is_refused_while_streaming(gateway: Gateway) -> None:
    chunk = b"[" + b"0," * 32767 + b"0]"  # 64 KiB
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(LIMIT // len(chunk) + 2))
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Transfer-Encoding": "chunked"})
    response = exchange(gateway, head + chunks + b"0\r\n\r\n")
    assert statuses(response)[:1] == [413]
    alive(gateway)


def test_a_content_length_shorter_than_the_body_reads_only_what_it_declares(
    gateway: Gateway,
) -> None:
    body = envelope("short-" + uuid.uuid4().hex)
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Content-Length": "10"})
    codes = statuses(exchange(gateway, head + body))
    # The first 10 bytes are not JSON; the rest is not an HTTP request: 4xx both.
    assert codes
    assert codes[0] == 400
    assert all(400 <= code < 500 for code in codes)
    alive(gateway)


def test_a_content_length_longer_than_the_body_neither_fails_nor_hangs_the_gateway(
    gateway: Gateway,
) -> None:
    body = envelope("long-" + uuid.uuid4().hex)
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Content-Length": str(len(body) + 100)})
    response = exchange(gateway, head + body, half_close=True)
    # The client hung up mid-body: the answer (if any gets out) is a 4xx, and nothing failed.
    assert all(400 <= code < 500 for code in statuses(response))
    failed = [line for line in gateway.log_lines() if line.get("event") == "request_failed"]
    assert failed == []
    alive(gateway)


def test_a_body_without_content_length_or_chunking_is_an_empty_body(gateway: Gateway) -> None:
    head = request_head(CALIPER, CALIPER_HEADERS)
    codes = statuses(exchange(gateway, head + envelope("nolength")))
    assert codes
    assert codes[0] == 400  # an empty body is not a Caliper envelope
    assert all(400 <= code < 500 for code in codes)


@pytest.mark.parametrize("declared", ["abc", "-1", "1, 2", "0x10", "1e3"])
def test_an_invalid_content_length_is_refused(gateway: Gateway, declared: str) -> None:
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Content-Length": declared})
    codes = statuses(exchange(gateway, head + b"{}"))
    assert codes
    assert all(400 <= code < 500 for code in codes)
    alive(gateway)


# --- compressed bodies ------------------------------------------------------------------------


def gzip_bomb(expanded: int = 1 << 30) -> bytes:
    """About 1 MiB of gzip that expands to `expanded` bytes of zeros (concatenated members)."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (expanded // (16 << 20))


def peak_rss(gateway: Gateway) -> int:
    """The most memory the gateway process has ever held (VmHWM): a spike cannot hide."""
    with open(f"/proc/{gateway.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def own_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of this module's own, so that its peak memory is only what these tests cost."""
    yield from running_gateway(broker, tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "gzip, identity", "x-unknown"])
def test_compressed_bodies_are_refused_unread(own_gateway: Gateway, encoding: str) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < LIMIT  # under the size limit: only the encoding check stops it
    before = peak_rss(own_gateway)
    response = httpx.post(
        f"{own_gateway.url}{CALIPER}",
        content=bomb if encoding.startswith("gzip") else zlib.compress(b"\0" * (1 << 20)),
        headers={**CALIPER_HEADERS, "Content-Encoding": encoding},
        timeout=30,
    )
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    assert "content encoding" in response.json()["detail"]
    assert peak_rss(own_gateway) - before < 64 << 20  # nothing was inflated


def test_canvas_refuses_a_compressed_body_in_its_own_format(client_sync: httpx.Client) -> None:
    response = client_sync.post(
        CANVAS,
        content=gzip.compress(b'{"quiz_submission_events": []}'),
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        },
    )
    assert response.status_code == 415
    assert "content encoding" in response.json()["errors"][0]["message"]


def test_a_body_of_tiny_values_is_refused_before_it_is_parsed(own_gateway: Gateway) -> None:
    # About 4 MiB of `{},`: 1.4 million objects, some 120 MiB of Python objects once parsed.
    body = envelope("tiny").replace(b'"data":[]', b'"data":[' + b"{}," * 1_390_000 + b"{}]")
    assert len(body) < LIMIT
    before = peak_rss(own_gateway)
    response = httpx.post(
        f"{own_gateway.url}{CALIPER}", content=body, headers=CALIPER_HEADERS, timeout=30
    )
    assert response.status_code == 400
    assert "more than 250000 values" in response.json()["detail"]
    assert peak_rss(own_gateway) - before < 64 << 20


# --- JSON -------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


HOSTILE_JSON: dict[str, tuple[Callable[[str], bytes], str]] = {
    "duplicate keys": (
        lambda m: envelope(m)[:-1] + b',"data":[{"type":"AssessmentEvent"}]}',
        "repeats a key",
    ),
    "nested duplicate keys": (
        lambda m: envelope(m, [{"type": "x", "object": {"id": "a"}}]).replace(
            b'{"id":"a"}', b'{"id":"a","id":"b"}'
        ),
        "repeats a key",
    ),
    "too deep": (
        lambda m: envelope(m).replace(b'"data":[]', f'"data":[{nested(MAX_JSON_DEPTH)}]'.encode()),
        "deeper than",
    ),
    "too deep for orjson": (
        lambda m: envelope(m).replace(b'"data":[]', b'"data":' + b"[" * 5000 + b"]" * 5000),
        "deeper than",
    ),
    "too many values": (lambda m: envelope(m, [[{}] * 5000] * 60), "more than 250000 values"),
    "too many items": (
        lambda m: envelope(m, [0] * (MAX_JSON_ITEMS + 1)),
        "more than 10000 members",
    ),
    "too many keys": (
        lambda m: envelope(m, [{f"k{i}": i for i in range(MAX_JSON_ITEMS + 1)}]),
        "more than 10000",
    ),
    "integer past 64 bits": (
        lambda m: envelope(m).replace(b'"data":[]', b'"data":[123456789012345678901234567890]'),
        "does not fit in 64 bits",
    ),
}
MALFORMED_JSON: dict[str, tuple[Callable[[str], bytes], str]] = {
    "NaN": (lambda m: envelope(m).replace(b'"data":[]', b'"data":[NaN]'), "not valid JSON"),
    "Infinity": (
        lambda m: envelope(m).replace(b'"data":[]', b'"data":[-Infinity]'),
        "not valid JSON",
    ),
    "number overflowing a double": (
        lambda m: envelope(m).replace(b'"data":[]', b'"data":[1e400]'),
        "not valid JSON",
    ),
    "invalid UTF-8": (lambda m: envelope(m).replace(b"/sensors/", b"/\xff\xfe/"), "UTF-8"),
    "lone surrogate": (
        lambda m: envelope(m).replace(b"/sensors/", b"/\\ud800/"),
        "not valid JSON",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_JSON) + sorted(MALFORMED_JSON))
def test_hostile_json_gets_a_caliper_400(client_sync: httpx.Client, case: str) -> None:
    build, message = {**HOSTILE_JSON, **MALFORMED_JSON}[case]
    response = client_sync.post(CALIPER, content=build(uuid.uuid4().hex), headers=CALIPER_HEADERS)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    assert message in response.json()["detail"]


def test_canvas_answers_hostile_json_in_its_own_format(client_sync: httpx.Client) -> None:
    body = b'{"quiz_submission_events": [], "quiz_submission_events": [{"event_type": "x"}]}'
    response = client_sync.post(
        CANVAS,
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {"errors": [{"message": "a JSON object repeats a key"}]}


def inspera_post(client: httpx.Client, body: bytes) -> httpx.Response:
    signature = hmac.new(INSPERA_SECRET.encode(), body, hashlib.sha1).hexdigest()
    return client.post(
        INSPERA,
        content=body,
        headers={"Content-Type": "application/json", "X-Inspera-Signature": signature},
    )


def test_inspera_refuses_a_signed_webhook_with_a_repeated_key(client_sync: httpx.Client) -> None:
    body = b'{"contextObjectId": 1, "event": "confirm_final_grades", "contextObjectId": 2}'
    response = inspera_post(client_sync, body)
    assert response.status_code == 400
    assert response.json()["detail"] == "a JSON object repeats a key"


# --- forms ------------------------------------------------------------------------------------


def test_canvas_refuses_form_keys_nested_deeper_than_rack_allows(client_sync: httpx.Client) -> None:
    key = "quiz_submission_events" + "[a]" * 40
    response = client_sync.post(
        CANVAS,
        content=urlencode({key: "1"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": FORM},
    )
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    ("path", "headers"),
    [(CANVAS, {"Authorization": f"Bearer {TOKEN}"}), (PEARSON, {})],
    ids=["canvas", "pearson"],
)
def test_a_form_with_too_many_fields_is_refused_before_it_is_parsed(
    client_sync: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    body = "&".join(f"f{i}=1" for i in range(MAX_FORM_FIELDS + 1)).encode()
    response = client_sync.post(path, content=body, headers={**headers, "Content-Type": FORM})
    assert response.status_code == 400
    assert f"more than {MAX_FORM_FIELDS} fields" in response.text


def test_a_form_of_only_separators_is_refused(client_sync: httpx.Client) -> None:
    response = client_sync.post(
        CANVAS,
        content=b"&" * (LIMIT - 1),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": FORM},
    )
    assert response.status_code == 400


# --- nothing published --------------------------------------------------------------------------


async def test_bodies_over_a_limit_publish_nothing(gateway: Gateway, kafka: TopicReader) -> None:
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        for build, _ in HOSTILE_JSON.values():
            response = await http.post(CALIPER, content=build(marker), headers=CALIPER_HEADERS)
            assert response.status_code == 400
        for build, _ in MALFORMED_JSON.values():
            response = await http.post(CALIPER, content=build(marker), headers=CALIPER_HEADERS)
            assert response.status_code == 400
        response = await http.post(
            CALIPER,
            content=gzip.compress(envelope(marker)),
            headers={**CALIPER_HEADERS, "Content-Encoding": "gzip"},
        )
        assert response.status_code == 415
    canonical = await kafka.settle(gateway.canonical_topic)
    assert not [r for r in canonical if marker.encode() in r.value]
    # Merely malformed JSON is kept as a dead letter for replay, as every malformed body is;
    # a body over a limit is not kept at all.
    dead = [r.json() for r in await kafka.settle(gateway.deadletter_topic)]
    kept = [d for d in dead if marker in d.get("original_body", "")]
    assert kept  # the malformed ones: so the search above does find what was kept
    assert len(kept) <= len(MALFORMED_JSON)
    assert all(d["reason"] == "malformed_payload" for d in kept)  # none is `unsafe_payload`


@pytest.fixture
def client_sync(gateway: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        yield http


# --- charsets and transfer codings ------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type", "charset"),
    [
        (CALIPER, "application/json", "utf-16"),
        (CALIPER, "application/json", '"ISO-8859-1"'),
        (CANVAS, FORM, "utf-16"),
    ],
    ids=["caliper-utf-16", "caliper-latin-1", "canvas-form-utf-16"],
)
def test_a_charset_other_than_utf8_gets_415(
    client_sync: httpx.Client, path: str, content_type: str, charset: str
) -> None:
    """JSON and forms are read as UTF-8: another charset is an unsupported media type, not a
    body that fails to parse."""
    body = envelope("charset") if path == CALIPER else b"quiz_submission_events="
    response = client_sync.post(
        path,
        content=body.decode().encode("utf-16") if "16" in charset else body,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": f"{content_type}; charset={charset}",
        },
    )
    assert response.status_code == 415
    detail = response.text
    assert "charset" in detail
    assert "UTF-8" in detail


@pytest.mark.parametrize("coding", ["gzip, chunked", "deflate, chunked", "x-custom, chunked"])
def test_a_transfer_coding_other_than_chunked_is_refused_unread(
    gateway: Gateway, coding: str
) -> None:
    # Only the head is sent: the answer must not wait for a body.
    head = request_head(CALIPER, {**CALIPER_HEADERS, "Transfer-Encoding": coding})
    response = exchange(gateway, head)
    assert statuses(response) == [415]
    assert b"connection: close" in response.lower()
    assert PROBLEM.encode() in response
    assert b"transfer coding" in response
    alive(gateway)
