"""Slow, oversized and unauthenticated clients against a real `gateway serve` (issue #18: one
request must never stop the gateway).

Each test reproduces an attack on loopback with raw sockets (HTTP clients refuse to misbehave)
against a gateway started with short timeouts, and checks what a real sender sees meanwhile:
its success answer. The attack connections must be answered and closed by the gateway itself,
within the configured timeout and the time the gateway takes to notice (a quarter of the
shortest timeout). Several source addresses are loopback addresses other than 127.0.0.1: the
kernel routes all of 127/8 to the loopback interface, so each looks like its own client.
"""

from __future__ import annotations

import base64
import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.kafka.broker import port_in_use, wait_until_listening
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN, Gateway, running_gateway, start_gateway, stop_gateway
from tests.support.http import free_port
from tests.support.inspera import notification, sign

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
# What the gateway may take past a timeout to act on it (it checks deadlines every quarter of
# the shortest timeout), plus what 600 connections cost a loaded 2-core machine.
MARGIN = 3.0
MAX_UNVERIFIED = 16
MAX_UNVERIFIED_PER_CLIENT = 4
SHORT_TIMEOUTS = {
    "GATEWAY_SERVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "GATEWAY_SERVER_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "GATEWAY_SERVER_MAX_UNVERIFIED_IN_FLIGHT": str(MAX_UNVERIFIED),
    "GATEWAY_SERVER_MAX_UNVERIFIED_PER_CLIENT": str(MAX_UNVERIFIED_PER_CLIENT),
}
GATEWAY_DEV = [sys.executable, "-m", "gateway.cli", "dev"]
CALIPER = "/v1/caliper"
CANVAS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
INSPERA = "/v1/inspera/webhooks"
PROBLEM = b"application/problem+json"
WEBHOOK_KEY = b"slow-clients-standard-webhooks!!"
# The dev configuration, plus a Standard Webhooks credential on Inspera's route.
CONFIG = (ROOT / "gateway.dev.toml").read_text(encoding="utf-8") + (
    '\n[[tenants]]\nname = "hooks"\n\n[[tenants.credentials]]\nvendor = "inspera"\n'
    f'scheme = "standard-webhooks"\nsecret = "whsec_{base64.b64encode(WEBHOOK_KEY).decode()}"\n'
)


@pytest.fixture(scope="module")
def slow(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway of this module's own, with timeouts of seconds."""
    tmp = tmp_path_factory.mktemp("slow")
    yield from running_gateway(broker, tmp, SHORT_TIMEOUTS, config=CONFIG)


# --- raw connections ----------------------------------------------------------------------------


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def head(path: str, headers: dict[str, str], method: str = "POST") -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def open_connections(
    url: str, count: int, first: bytes, sources: Sequence[str] = ("127.0.0.1",)
) -> list[socket.socket]:
    """`count` connections that each sent `first` and then wait, spread over `sources`."""
    opened = []
    for n in range(count):
        source = (sources[n % len(sources)], 0)
        sock = socket.create_connection(address(url), timeout=10, source_address=source)
        if first:
            sock.sendall(first)
        opened.append(sock)
    return opened


def until_closed(connections: list[socket.socket], within: float) -> tuple[list[bytes], int]:
    """Read every connection until the gateway closes it or `within` seconds pass: what each
    one received, and how many were still open then. Closes them all."""
    received = {sock: b"" for sock in connections}
    selector = selectors.DefaultSelector()
    for sock in connections:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
    still_open = len(connections)
    deadline = time.monotonic() + within
    while still_open and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            ready: socket.socket = key.data
            try:
                chunk = ready.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[ready] += chunk
            else:
                selector.unregister(ready)
                still_open -= 1
    selector.close()
    for sock in connections:
        sock.close()
    return [received[sock] for sock in connections], still_open


def status(response: bytes) -> int:
    """The status code of the first response in `response` (0: none)."""
    line = response.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) > 1 and line[0] == b"HTTP/1.1" else 0


def response_head(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[0].lower()


def response_body(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


# --- what a real sender sends -------------------------------------------------------------------


def caliper_sender(url: str) -> int:
    body = orjson.dumps(envelope(assessment_started()))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return httpx.post(f"{url}{CALIPER}", content=body, headers=headers, timeout=10).status_code


def inspera_sender(url: str) -> int:
    body = orjson.dumps(notification())
    headers = {"Content-Type": "application/json", "X-Inspera-Signature": sign(body)}
    return httpx.post(f"{url}{INSPERA}", content=body, headers=headers, timeout=10).status_code


def refusals(gateway: Gateway) -> list[dict[str, object]]:
    return [line for line in gateway.log_lines() if line.get("event") == "http_refused"]


# --- bodies ---------------------------------------------------------------------------------------

SLOW_BODY = {"Content-Type": "application/json", "Content-Length": "100000"}


def test_unauthenticated_slow_bodies_are_refused_before_the_body(slow: Gateway) -> None:
    """520 connections without credentials, each one byte into a 100 kB body: once they took
    every one of the 512 slots and real senders got 503 for as long as they lasted."""
    attack = open_connections(slow.url, 520, head(CALIPER, SLOW_BODY) + b"{")
    try:
        assert caliper_sender(slow.url) == 200
    finally:
        answers, still_open = until_closed(attack, MARGIN)
    assert still_open == 0
    assert {status(answer) for answer in answers} == {401}
    assert all(b"connection: close" in response_head(answer) for answer in answers)
    assert all(PROBLEM in response_head(answer) for answer in answers)


def test_slow_bodies_on_signed_routes_take_only_their_own_pool(slow: Gateway) -> None:
    """Signatures over the body can only be checked once it is read: 520 slow bodies with a
    signature header, from 130 addresses, fill the unverified pool and no more."""
    signed = head(INSPERA, {**SLOW_BODY, "X-Inspera-Signature": "0" * 40}) + b"{"
    sources = [f"127.0.1.{n}" for n in range(1, 131)]
    started = time.monotonic()
    attack = open_connections(slow.url, 520, signed, sources)
    try:
        time.sleep(0.5)  # the gateway has read every head: the pool is full
        assert caliper_sender(slow.url) == 200  # bearer senders have their own slots
        assert inspera_sender(slow.url) == 503  # the unverified pool is full: retry later
    finally:
        answers, still_open = until_closed(attack, BODY_TIMEOUT + MARGIN)
    elapsed = time.monotonic() - started
    assert still_open == 0, f"{still_open} slow bodies still open after {elapsed:.1f}s"
    codes = [status(answer) for answer in answers]
    assert codes.count(408) == MAX_UNVERIFIED  # read until the body timeout, then refused
    assert set(codes) <= {408, 429, 503}
    assert all(b"connection: close" in response_head(answer) for answer in answers)
    assert inspera_sender(slow.url) == 200  # the pool is free again


def test_one_address_cannot_take_the_unverified_pool(slow: Gateway) -> None:
    signed = head(INSPERA, {**SLOW_BODY, "X-Inspera-Signature": "0" * 40}) + b"{"
    attack = open_connections(slow.url, 40, signed, ["127.0.0.2"])
    try:
        time.sleep(0.5)  # the first ones (as many as one address may have) read their bodies
        assert inspera_sender(slow.url) == 200  # from 127.0.0.1
    finally:
        answers, still_open = until_closed(attack, BODY_TIMEOUT + MARGIN)
    assert still_open == 0
    codes = [status(answer) for answer in answers]
    assert codes.count(429) == 40 - MAX_UNVERIFIED_PER_CLIENT
    assert codes.count(408) == MAX_UNVERIFIED_PER_CLIENT
    limited = next(a for a in answers if status(a) == 429)
    assert b"retry-after:" in response_head(limited)


@pytest.mark.parametrize(
    ("path", "media"),
    [(CALIPER, PROBLEM), (CANVAS, b"application/json")],
    ids=["caliper", "canvas"],
)
def test_an_authenticated_body_that_trickles_gets_408(
    slow: Gateway, path: str, media: bytes
) -> None:
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Content-Length": "1000",
    }
    (sock,) = open_connections(slow.url, 1, head(path, headers))
    started = time.monotonic()
    try:
        for _ in range(int(BODY_TIMEOUT * 4)):  # a byte every half second: still too slow
            sock.sendall(b" ")
            time.sleep(0.5)
    except OSError:
        pass  # the gateway gave up on it
    (answer,), still_open = until_closed([sock], MARGIN)
    elapsed = time.monotonic() - started
    assert still_open == 0
    assert status(answer) == 408
    assert BODY_TIMEOUT <= elapsed <= BODY_TIMEOUT + MARGIN
    assert f"content-type: {media.decode()}".encode() in response_head(answer)
    assert b"connection: close" in response_head(answer)
    if path == CANVAS:  # in the vendor's own error format
        assert list(orjson.loads(response_body(answer))) == ["errors"]
    else:
        assert orjson.loads(response_body(answer))["status"] == 408


def test_a_body_nobody_reads_is_not_waited_for_forever(slow: Gateway) -> None:
    """A route that answers without reading the body (a 405, a 404): the answer goes out at
    once, and the rest of the body gets the body timeout, not as long as it trickles."""
    cases = [head("/api/v1/courses/1", SLOW_BODY), head("/nowhere", SLOW_BODY)]  # GET only
    connections = [open_connections(slow.url, 1, case + b"{")[0] for case in cases]
    started = time.monotonic()
    try:
        for _ in range(int(BODY_TIMEOUT * 4)):  # a byte every half second
            for sock in connections:
                sock.sendall(b" ")
            time.sleep(0.5)
    except OSError:
        pass  # closed by the gateway
    answers, still_open = until_closed(connections, MARGIN)
    elapsed = time.monotonic() - started
    assert still_open == 0
    assert BODY_TIMEOUT <= elapsed <= BODY_TIMEOUT + MARGIN
    assert [status(answer) for answer in answers] == [405, 404]
    assert [line for line in refusals(slow) if line["reason"] == "body_timeout"]


def test_headers_that_need_no_body_are_checked_before_it(slow: Gateway) -> None:
    """A missing Inspera signature, or Standard Webhooks headers with a stale timestamp, cannot
    become valid with any body: refused at once, not after reading (or waiting for) a body."""
    stale = str(int(time.time()) - 3600)
    cases = [
        head(INSPERA, SLOW_BODY),
        head(INSPERA, {**SLOW_BODY, "X-Inspera-Signature": "not hex"}),
        head(
            INSPERA,
            {
                **SLOW_BODY,
                "webhook-id": "msg_1",
                "webhook-timestamp": stale,
                "webhook-signature": "v1,AAAA",
            },
        ),
        head(INSPERA, {**SLOW_BODY, "webhook-signature": "v1,AAAA"}),
    ]
    connections = [open_connections(slow.url, 1, case)[0] for case in cases]
    answers, still_open = until_closed(connections, BODY_TIMEOUT / 2)
    assert still_open == 0
    assert [status(answer) for answer in answers] == [401] * len(cases)


# --- headers --------------------------------------------------------------------------------------


def test_slowloris_connections_are_closed_after_the_header_timeout(slow: Gateway) -> None:
    started = time.monotonic()
    slowloris = open_connections(slow.url, 600, b"POST /v1/caliper HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    silent = open_connections(slow.url, 10, b"")
    try:
        assert caliper_sender(slow.url) == 200
        for sock in slowloris[:100]:  # still sending, slowly: the deadline does not move
            sock.sendall(b"X-Slow: 1\r\n")
    finally:
        answers, still_open = until_closed(slowloris + silent, HEADER_TIMEOUT + MARGIN)
    elapsed = time.monotonic() - started
    assert still_open == 0, f"{still_open} connections still open after {elapsed:.1f}s"
    assert elapsed >= HEADER_TIMEOUT
    assert {status(answer) for answer in answers[:600]} == {408}
    assert all(b"connection: close" in response_head(answer) for answer in answers[:600])
    assert set(answers[600:]) == {b""}  # nothing was asked: closed without an answer
    assert caliper_sender(slow.url) == 200
    timeouts = [line for line in refusals(slow) if line["reason"] == "header_timeout"]
    assert len(timeouts) >= 610


def huge_header(size: int) -> bytes:
    return head(CALIPER, {"Authorization": f"Bearer {TOKEN}"})[:-2] + b"X-Huge: " + b"a" * size


def send_in_background(sock: socket.socket, data: bytes) -> threading.Thread:
    """Send `data` (until the gateway stops taking it) while the test reads the answer."""

    def send() -> None:
        with contextlib.suppress(OSError):  # the gateway closed the connection
            sock.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_huge_header_gets_431_and_the_connection_closed(slow: Gateway) -> None:
    body = orjson.dumps(envelope(assessment_started()))
    request = huge_header(64 << 20) + b"\r\nContent-Type: application/json\r\n"
    request += f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    (sock,) = open_connections(slow.url, 1, b"")
    sender = send_in_background(sock, request)
    (answer,), still_open = until_closed([sock], MARGIN)
    sender.join(10)
    assert still_open == 0
    assert status(answer) == 431
    assert b"connection: close" in response_head(answer)
    assert PROBLEM in response_head(answer)
    assert orjson.loads(response_body(answer))["status"] == 431
    logged = [line for line in refusals(slow) if line["status"] == 431]
    assert logged
    assert all(set(line) >= {"status", "reason", "client"} for line in logged)
    assert b"aaaaaaaa" not in slow.log_path.read_bytes()  # never a header's contents


def test_too_many_headers_get_431_and_a_hundred_do_not(slow: Gateway) -> None:
    body = orjson.dumps(envelope(assessment_started()))
    base = {
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    many = head(CALIPER, {**base, **{f"X-H{n}": "1" for n in range(150)}}) + body
    fine = head(CALIPER, {**base, **{f"X-H{n}": "1" for n in range(90)}}) + body
    connections = open_connections(slow.url, 1, many) + open_connections(slow.url, 1, fine)
    answers, _ = until_closed(connections, MARGIN)
    assert status(answers[0]) == 431
    assert b"connection: close" in response_head(answers[0])
    assert status(answers[1]) == 200


def resident(gateway: Gateway, field: str) -> int:
    """A memory figure of the gateway process from /proc: VmRSS now, VmHWM the peak."""
    with open(f"/proc/{gateway.process.pid}/status") as process_status:
        for line in process_status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


@pytest.fixture(scope="module")
def measured(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway for memory measurements only: nothing else raises its peak."""
    tmp = tmp_path_factory.mktemp("measured")
    yield from running_gateway(broker, tmp, SHORT_TIMEOUTS)


def test_unfinished_huge_headers_leave_memory_bounded(measured: Gateway) -> None:
    """Three headers of 100 MB that never end took the process from 94 to 417 MB."""
    assert caliper_sender(measured.url) == 200  # everything a request needs is loaded
    before, peak_before = resident(measured, "VmRSS"), resident(measured, "VmHWM")
    connections = open_connections(measured.url, 3, b"")
    senders = [send_in_background(sock, huge_header(100 << 20)) for sock in connections]
    assert caliper_sender(measured.url) == 200  # while they send
    for sender in senders:
        sender.join(30)
    grown = resident(measured, "VmRSS") - before
    peak_grown = resident(measured, "VmHWM") - peak_before
    answers, still_open = until_closed(connections, MARGIN)
    assert grown < 32 << 20, f"RSS grew by {grown >> 20} MiB"
    assert peak_grown < 32 << 20, f"peak RSS grew by {peak_grown >> 20} MiB"
    assert still_open == 0
    assert [status(answer) for answer in answers] == [431] * 3
    assert caliper_sender(measured.url) == 200


def test_pipelined_requests_that_are_never_read_leave_memory_bounded(measured: Gateway) -> None:
    """Tiny requests sent ahead without reading an answer: uvicorn resumes reading after every
    answer, and each read queued thousands of requests (20 connections: +2.3 GiB)."""
    assert caliper_sender(measured.url) == 200
    before = resident(measured, "VmRSS")
    flood = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * (1 << 17)  # 4.6 MB
    connections = []
    for _ in range(5):  # the admin port: served by the same protocol, with the same bounds
        sock = socket.create_connection(address(measured.admin_url), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads no answers
        sock.setblocking(False)
        sent, until = 0, time.monotonic() + 0.5
        while sent < len(flood) and time.monotonic() < until:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(flood[sent : sent + 65536])
            time.sleep(0.001)
        connections.append(sock)
    time.sleep(1)
    grown = resident(measured, "VmRSS") - before
    assert caliper_sender(measured.url) == 200
    for sock in connections:
        sock.close()
    assert grown < 64 << 20, f"RSS grew by {grown >> 20} MiB"
    assert len([r for r in refusals(measured) if r["reason"] == "too_many_pipelined"]) == 5


# --- every way the gateway is started -------------------------------------------------------------


def limits_hold(url: str) -> None:
    """The header limits and timeout, and a real sender's success, on the gateway at `url`."""
    many = head(CALIPER, {f"X-H{n}": "1" for n in range(150)})
    loris = b"POST /v1/caliper HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    connections = open_connections(url, 1, many) + open_connections(url, 8, loris)
    answers, still_open = until_closed(connections, HEADER_TIMEOUT + MARGIN)
    assert still_open == 0
    assert [status(answer) for answer in answers] == [431] + [408] * 8
    assert caliper_sender(url) == 200


def test_several_workers_keep_the_limits(broker: str, tmp_path: Path) -> None:
    workers = start_gateway(broker, tmp_path, {**SHORT_TIMEOUTS, "GATEWAY_SERVER_WORKERS": "2"})
    try:
        limits_hold(workers.url)
    finally:
        stop_gateway(workers)


def test_gateway_dev_keeps_the_limits(tmp_path: Path) -> None:
    port, admin_port, kafka_port = free_port(), free_port(), free_port()
    # Not gateway-*.log: the banner of `gateway dev` shows its example curl, dev token included.
    log = (tmp_path / "dev-output.log").open("wb")
    process = subprocess.Popen(
        [*GATEWAY_DEV, "--port", str(port), "--kafka-port", str(kafka_port)],
        cwd=tmp_path,  # no gateway.dev.toml here: dev falls back to the repository's
        env={**os.environ, **SHORT_TIMEOUTS, "GATEWAY_SERVER_ADMIN_PORT": str(admin_port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(port, timeout=60)
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "gateway dev never became ready"
            time.sleep(0.2)
        limits_hold(f"http://127.0.0.1:{port}")
    finally:
        # Ctrl-C, as a developer stops it: it stops the broker too.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert not port_in_use(kafka_port)  # the broker went with it


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
async def test_an_upload_refused_before_its_body_still_reads_its_answer(
    slow: Gateway, chunked: bool
) -> None:
    """Refused before its body is read, the connection is closed, but not under the client's
    feet: closing while it still sends would reset the connection and lose the answer."""
    body = b"[" + b"0," * ((2 << 20) - 2) + b"0]"  # under the 4 MiB limit: refused for its token

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    headers = {"Authorization": "Bearer wrong", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=slow.url, timeout=30) as client:
        for _ in range(3):  # on a kept connection, as the shared clients of other tests
            content = chunks() if chunked else body
            response = await client.post(CALIPER, content=content, headers=headers)
            assert response.status_code == 401
            assert response.headers["connection"] == "close"
