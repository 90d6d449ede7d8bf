"""The gateway on a Kafka that only speaks TLS: the embedded broker behind a TLS proxy, with the
proxy's address as the one it advertises, so every connection of every client (librdkafka's
producer and quiz-log consumer, aiokafka's topic admin and readers) goes through TLS and must
trust the test's CA."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError

from gateway.kafka.broker import start_broker, stop_broker
from gateway.kafka.security import aiokafka_connection
from gateway.settings import KafkaSettings
from tests.support.caliper import AUTH, assessment_started, envelope
from tests.support.canvas import QuizSubmission, post_events, quiz_log, stamped
from tests.support.certificates import self_signed
from tests.support.gateway import ROOT, Gateway, running_gateway
from tests.support.http import free_port
from tests.support.kafka import KafkaRecord, TopicReader


class TlsProxy:
    """Terminates TLS on `port` and forwards each connection to the broker's plain port, in a
    thread of its own (the gateway under test is another process)."""

    def __init__(self, port: int, upstream: int, cert: Path, key: Path) -> None:
        self.port, self.upstream = port, upstream
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.handshakes = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TlsProxy:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context)
        )
        self._started.set()
        loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(loop)  # the connections still being forwarded
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.run_until_complete(server.wait_closed())
        loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # only a completed TLS handshake gets here
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:  # also when the proxy stops under open connections
            writer.close()
            up_writer.close()


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, TlsProxy]]:
    """A broker reachable only through TLS: yields its bootstrap address, CA file and proxy."""
    cert, key = self_signed(tmp_path_factory.mktemp("tls"))
    broker_port, proxy_port = free_port(), free_port()
    address = f"127.0.0.1:{proxy_port}"
    with TlsProxy(proxy_port, broker_port, cert, key) as proxy:
        broker = start_broker(broker_port, quiet=True, advertised=address)
        try:
            yield address, cert, proxy
        finally:
            stop_broker(broker)


@pytest.fixture(scope="module")
def tls_gateway(
    tls_kafka: tuple[str, Path, TlsProxy], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    address, ca_file, _ = tls_kafka
    env = {"GATEWAY_KAFKA_SECURITY_PROTOCOL": "SSL", "GATEWAY_KAFKA_SSL_CA_FILE": str(ca_file)}
    yield from running_gateway(address, tmp_path_factory.mktemp("tls-gateway"), env)


async def post_caliper_event(gateway: Gateway) -> str:
    """Post one Caliper event through `gateway`; returns the marker its id carries."""
    marker = uuid.uuid4().hex
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        body = envelope(assessment_started(f"urn:uuid:{marker}"))
        response = await client.post("/v1/caliper", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    return marker


async def test_events_reach_a_kafka_that_only_speaks_tls(
    tls_kafka: tuple[str, Path, TlsProxy], tls_gateway: Gateway
) -> None:
    address, ca_file, proxy = tls_kafka
    marker = await post_caliper_event(tls_gateway)

    kafka = dataclasses.replace(
        KafkaSettings(),
        bootstrap_servers=address,
        security_protocol="SSL",
        ssl_ca_file=str(ca_file),
    )
    reader = TopicReader(address, **aiokafka_connection(kafka))

    def ours(records: list[KafkaRecord]) -> bool:
        return any(marker.encode() in r.value for r in records)

    records = await reader.read(tls_gateway.canonical_topic, ours)
    assert ours(records)
    assert proxy.handshakes >= 2  # the gateway's clients and this reader, all through TLS
    # librdkafka's clients (the producer, the quiz-log consumer) complained of nothing.
    assert [
        line for line in tls_gateway.log_lines() if line.get("event") == "kafka_client_log"
    ] == []


async def test_gateway_tail_reads_through_tls(
    tls_kafka: tuple[str, Path, TlsProxy], tls_gateway: Gateway
) -> None:
    address, ca_file, _ = tls_kafka
    marker = await post_caliper_event(tls_gateway)
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": address,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": tls_gateway.canonical_topic,
        "GATEWAY_KAFKA_SECURITY_PROTOCOL": "SSL",
        "GATEWAY_KAFKA_SSL_CA_FILE": str(ca_file),
    }
    tail = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gateway.cli", "tail", "--from-beginning"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert tail.returncode == 0, tail.stderr
    assert marker in tail.stdout


async def test_the_quiz_log_reads_the_topic_through_tls(tls_gateway: Gateway) -> None:
    # The Canvas quiz log is a librdkafka consumer of the canonical topic in the gateway.
    sub = QuizSubmission.fresh()
    assert (
        await post_events(tls_gateway, sub, stamped("session_started", 0, {"user_agent": "UA"}))
        == 204
    )
    assert [event_type for _, event_type in await quiz_log(tls_gateway, sub)] == ["session_started"]


async def test_a_plaintext_client_gets_nothing_from_it(
    tls_kafka: tuple[str, Path, TlsProxy],
) -> None:
    address, _, _ = tls_kafka
    consumer = AIOKafkaConsumer(bootstrap_servers=address)
    try:
        with pytest.raises(KafkaConnectionError):
            await asyncio.wait_for(consumer.start(), 10)
    finally:
        await consumer.stop()
