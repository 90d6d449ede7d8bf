"""Running the real gateway for a test: `gateway serve` on free loopback ports with its own
topics and state, its log lines, and the gateway's commands as a user runs them.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support.http import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dev-token"


@dataclass(frozen=True)
class Gateway:
    """A running `gateway serve` process: vendor routes at `url`, the operational endpoints
    (/healthz, /readyz, /metrics, /openapi.json) at `admin_url`."""

    url: str
    admin_url: str
    suffix: str
    canonical_topic: str
    deadletter_topic: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines the gateway has logged so far."""
        lines = self.log_path.read_bytes().splitlines()
        return [orjson.loads(line) for line in lines if line.startswith(b"{")]


# What no gateway log may ever contain: the dev credentials the tests send, pre-signed URL
# signatures, and any email address (test payloads carry learners' emails on purpose).
SECRETS_IN_TESTS = (
    b"dev-token",
    b"dev-pearson-key!",
    b"dev-inspera-secret",
    b"dev-xapi-secret",
    b"X-Amz-Signature",
    b"X-Amz-Credential",
)


EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Every gateway log of the session: the check after the run must find each one it was given.
GATEWAY_LOGS: list[Path] = []


def start_gateway(
    broker: str,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
    suffix: str | None = None,
) -> Gateway:
    """`gateway serve` with the dev configuration, its own topics and free ports, ready once its
    admin port says so. GATEWAY_SERVER_ADMIN_PORT=0 in `extra_env`: one port for everything.

    A `suffix` of an earlier gateway restarts "the same" gateway: same topics, same state dir.
    """
    port = free_port()
    suffix = suffix or uuid.uuid4().hex[:8]
    canonical, deadletter = f"edu.events.v1.{suffix}", f"edu.events.deadletter.v1.{suffix}"
    log_path = tmp / f"gateway-{suffix}-{port}.log"
    GATEWAY_LOGS.append(log_path)
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": canonical,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": deadletter,
        "GATEWAY_SERVER_STATE_DIR": str(tmp / f"state-{suffix}"),
        "GATEWAY_SERVER_ADMIN_PORT": str(free_port()),
        **(extra_env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    admin_port = int(env["GATEWAY_SERVER_ADMIN_PORT"])
    admin_url = f"http://127.0.0.1:{admin_port}" if admin_port else url
    gateway = Gateway(url, admin_url, suffix, canonical, deadletter, log_path, process)
    # One worker answering is not all of them: the others may still be starting, and take no
    # connection until they have.
    workers = int(env.get("GATEWAY_SERVER_WORKERS", "1"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited: {log_path.read_text()}")
        try:
            ready = httpx.get(f"{admin_url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            ready = False
        if ready and (workers == 1 or log_path.read_bytes().count(b'"started"') >= workers):
            return gateway
        time.sleep(0.1)
    stop_gateway(gateway)  # SIGTERM first: a killed parent would leave its workers running
    raise RuntimeError(f"gateway did not become ready: {log_path.read_text()}")


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.send_signal(signal.SIGTERM)
    try:
        gateway.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait()


def running_gateway(
    broker: str, tmp: Path, extra_env: dict[str, str] | None = None, *, config: str = ""
) -> Iterator[Gateway]:
    """A gateway for a fixture to `yield from`: started, yielded, stopped. `config` is TOML
    written to `tmp` and used instead of the dev configuration."""
    env = dict(extra_env or {})
    if config:
        path = tmp / "gateway.toml"
        path.write_text(config, encoding="utf-8")
        env["GATEWAY_CONFIG"] = str(path)
    running = start_gateway(broker, tmp, env)
    try:
        yield running
    finally:
        stop_gateway(running)


def read_until(process: subprocess.Popen[bytes], marker: str, within: float = 30) -> str:
    """What the process printed on stderr up to and including `marker`."""
    assert process.stderr is not None
    fd = process.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + within
    while marker.encode() not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} never printed; got:\n{seen.decode()}")
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"exited before printing {marker!r}:\n{seen.decode()}")
            seen += chunk
    return seen.decode()


async def gateway_command(env: dict[str, str], *args: str) -> str:
    """Run `gateway <args>` (off the event loop) and return what it printed."""
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return result.stdout


async def wait_for_log(
    gateway: Gateway, matches: Callable[[dict[str, Any]], bool], within: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [line for line in gateway.log_lines() if matches(line)]
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no such log line in {gateway.log_path}")
