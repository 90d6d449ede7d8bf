"""The admin port: the operational endpoints (/healthz, /readyz, /metrics, /openapi.json) answer
there and only there, so that the public port, the one an ingress exposes to the internet,
shows no tenant names in metrics; `gateway serve` and `gateway dev` both listen on it, and a
port the gateway cannot have stops it at start-up. Real `gateway serve` and `gateway dev`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson

from gateway.kafka.broker import wait_until_listening
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN
from tests.support.http import free_port

GATEWAY = [sys.executable, "-m", "gateway.cli"]
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
OPERATIONAL = ("/healthz", "/readyz", "/metrics", "/openapi.json")


async def test_the_public_port_answers_vendor_routes_only(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    body = orjson.dumps(envelope(assessment_started()))
    assert (await client.post("/v1/caliper", content=body, headers=AUTH)).status_code == 200
    unknown = await client.get("/no-such-route")
    assert unknown.status_code == 404
    for path in OPERATIONAL:
        # The same answer as a path that does not exist: nothing says what the admin port has.
        public = await client.get(path)
        assert (public.status_code, public.content) == (404, unknown.content), path
        assert public.headers["content-type"] == unknown.headers["content-type"], path
        assert b"gateway_" not in public.content

    assert (await admin.get("/healthz")).json() == {"status": "ok"}
    assert (await admin.get("/readyz")).json()["status"] == "ready"
    metrics = await admin.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'gateway_requests_total{status="200",tenant="demo",vendor="caliper"}' in metrics.text
    assert "/v1/caliper" in (await admin.get("/openapi.json")).json()["paths"]
    # And the admin port takes no events.
    sent = await admin.post("/v1/caliper", content=body, headers=AUTH)
    assert (sent.status_code, sent.content) == (404, unknown.content)


def serve(port: int, admin_port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`gateway serve` that is expected to stop at once (no broker needed for that)."""
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path),
        "GATEWAY_SERVER_ADMIN_PORT": str(admin_port),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
    }
    return subprocess.run(
        [*GATEWAY, "serve", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_serve_stops_when_it_cannot_have_its_admin_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = serve(free_port(), busy, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{busy} (server.admin_port)" in result.stderr

    port = free_port()
    result = serve(port, port, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "server.admin_port" in result.stderr
    assert "must differ from the public port" in result.stderr


def test_gateway_dev_serves_the_admin_port_too(tmp_path: Path) -> None:
    port, admin_port, kafka_port = free_port(), free_port(), free_port()
    # Not gateway-*.log: the banner of `gateway dev` shows its example curl, dev token included.
    log = (tmp_path / "dev-output.log").open("wb")
    process = subprocess.Popen(
        [*GATEWAY, "dev", "--port", str(port), "--kafka-port", str(kafka_port)],
        cwd=tmp_path,
        env={
            **os.environ,
            "GATEWAY_SERVER_ADMIN_PORT": str(admin_port),
            "GATEWAY_SERVER_STATE_DIR": str(tmp_path / "state"),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_listening(admin_port, timeout=60)
        deadline = time.monotonic() + 30
        while httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "gateway dev never became ready"
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 404
        assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 404
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C, as a developer stops it
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
