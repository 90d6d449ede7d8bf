"""Real components for the integration tests: the embedded broker and `gateway serve`, started
once per test session on free loopback ports (a public and an admin port per gateway), and a
Kafka reader that shows what was published.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.kafka.broker import start_broker, stop_broker

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "dev-token"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class KafkaRecord:
    """A record read back from a topic."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int = -1

    def json(self) -> Any:
        return orjson.loads(self.value)


class TopicReader:
    """Reads a topic from the beginning, as a downstream consumer would."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.options = options  # aiokafka's connection options (TLS, SASL), as the gateway's

    async def read(
        self,
        topic: str,
        until: Callable[[list[KafkaRecord]], bool],
        within: float = 15.0,
    ) -> list[KafkaRecord]:
        """Every record of `topic`, read until `until(records)` holds or `within` seconds pass."""
        connection = {"bootstrap_servers": self.bootstrap, **self.options}
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **connection)
        await consumer.start()
        try:
            deadline = time.monotonic() + within
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                # A topic created a moment ago (or not yet) is not in the client's metadata.
                await asyncio.sleep(0.2)
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            assignment = [TopicPartition(topic, p) for p in sorted(partitions or ())]
            consumer.assign(assignment)
            await consumer.seek_to_beginning(*assignment)
            records: list[KafkaRecord] = []
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records.extend(
                        KafkaRecord(m.topic, m.key, m.value, dict(m.headers), m.partition)
                        for m in messages
                    )
                if until(records):
                    break
            return records
        finally:
            await consumer.stop()

    async def settle(self, topic: str, quiet: float = 1.5) -> list[KafkaRecord]:
        """Every record of `topic` once nothing new has arrived for `quiet` seconds."""
        seen: list[int] = []
        started = time.monotonic()

        def quiet_enough(records: list[KafkaRecord]) -> bool:
            seen.append(len(records))
            return time.monotonic() - started > quiet and len(set(seen[-8:])) == 1

        return await self.read(topic, quiet_enough, within=quiet + 10)


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


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_gateway_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: grep every log every gateway of the session wrote."""
    yield
    leaks: list[tuple[str, str]] = []
    logs = sorted(tmp_path_factory.getbasetemp().rglob("gateway-*.log"))
    for log in logs:
        text = log.read_bytes()
        leaks += [(log.name, s.decode()) for s in SECRETS_IN_TESTS if s in text]
        leaks += [(log.name, m.group().decode()) for m in EMAIL.finditer(text)]
    # A run of tests that start no gateway has no log to check; one that does must find them all.
    assert set(GATEWAY_LOGS) <= set(logs), "a gateway log of this run was not found to check"
    assert not leaks, f"secrets or emails in gateway logs: {leaks[:20]}"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The embedded broker, on a free port; yields its bootstrap address."""
    port = free_port()
    process = start_broker(port, quiet=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(process)


@pytest.fixture(scope="session")
def kafka(broker: str) -> TopicReader:
    return TopicReader(broker)


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


@pytest.fixture(scope="session")
def gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the whole session, with the dev configuration."""
    yield from running_gateway(broker, tmp_path_factory.mktemp("gateway"))


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The session gateway's admin port: probes, metrics, the OpenAPI document."""
    async with httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as http:
        yield http
