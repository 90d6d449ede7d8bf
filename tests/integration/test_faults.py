"""Fault tests: no acknowledged event is lost when the broker freezes or dies, when the gateway is
killed with a full spool, or when it is stopped under load. Real broker, real HTTP, real signals.

Each test prints its tally (requests, acknowledged, present in Kafka, lost, duplicates);
`pytest -rP tests/integration/test_faults.py` shows them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

import httpx

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.caliper import expected_id
from tests.support.gateway import ROOT, Gateway, gateway_command, start_gateway, stop_gateway
from tests.support.http import free_port
from tests.support.kafka import TopicReader
from tests.support.load import LoadResult, load_for, send_load

FAST_SPOOL = {"GATEWAY_SPOOL_ACK_DEADLINE_SECONDS": "1"}
# What a sender may see besides 2xx: 503 with Retry-After (documented), or no answer at all
# while the gateway is down (a transport error: nothing was acknowledged, the sender keeps it).
ALLOWED_FAILURES = {"503", "ConnectError", "RemoteProtocolError", "ReadError"}


async def arrived(kafka: TopicReader, gateway: Gateway, result: LoadResult) -> dict[str, int]:
    """Read the canonical topic until every acknowledged event is there (or 60 s pass)."""
    wanted = {expected_id(e) for e in result.acknowledged}
    records = await kafka.read(
        gateway.canonical_topic, lambda rs: wanted <= {r.json()["id"] for r in rs}, within=60
    )
    report = result.report(records)
    print(f"{gateway.suffix}: {report} statuses={dict(result.statuses)}")
    return report


async def wait_ready(url: str, status: str = "ready", within: float = 30) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/readyz")).json().get("status") == status:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"{url} never became {status}")


async def test_broker_frozen_under_load_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL)
    try:
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(gateway.url, stop))
        await asyncio.sleep(2)
        os.kill(broker.pid, signal.SIGSTOP)
        await asyncio.sleep(5)
        os.kill(broker.pid, signal.SIGCONT)
        await asyncio.sleep(3)
        stop.set()
        result = await load
        assert set(result.statuses) - {"200"} <= {"503"}, result.statuses
        report = await arrived(TopicReader(f"127.0.0.1:{port}"), gateway, result)
        assert report["acknowledged"] > 0
        assert report["lost"] == 0, report
    finally:
        stop_gateway(gateway)
        os.kill(broker.pid, signal.SIGCONT)
        stop_broker(broker)


async def test_broker_killed_and_restarted_under_load_reconnects_by_itself(
    tmp_path: Path,
) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL)
    try:
        await load_for(gateway.url, 1)  # warm: connected, topics exist
        broker.kill()
        broker.wait()
        # The embedded broker keeps everything in memory: what it acknowledged died with it.
        # What the gateway acknowledges from now on must reach the new broker.
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(gateway.url, stop))
        await asyncio.sleep(3)
        broker = start_broker(port, quiet=True)
        await asyncio.sleep(4)
        stop.set()
        result = await load
        await wait_ready(gateway.admin_url)
        assert set(result.statuses) - {"200"} <= {"503"}, result.statuses
        report = await arrived(TopicReader(f"127.0.0.1:{port}"), gateway, result)
        assert report["acknowledged"] > 0
        assert report["lost"] == 0, report
    finally:
        stop_gateway(gateway)
        stop_broker(broker)


async def test_gateway_killed_with_a_full_spool_delivers_it_after_restart(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL)
    restarted: Gateway | None = None
    try:
        await load_for(gateway.url, 1)
        os.kill(broker.pid, signal.SIGSTOP)
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(gateway.url, stop))
        await wait_ready(gateway.admin_url, "degraded")
        await asyncio.sleep(3)
        gateway.process.kill()  # SIGKILL: no shutdown, no flush
        gateway.process.wait()
        stop.set()
        result = await load
        assert result.acknowledged
        assert set(result.statuses) - {"200"} <= ALLOWED_FAILURES, result.statuses
        os.kill(broker.pid, signal.SIGCONT)
        restarted = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL, gateway.suffix)
        report = await arrived(TopicReader(f"127.0.0.1:{port}"), restarted, result)
        assert report["lost"] == 0, report
        lines = restarted.log_lines()
        assert any(line["event"] == "spool_engaged" for line in lines)
        await wait_ready(restarted.admin_url)
    finally:
        if restarted is not None:
            stop_gateway(restarted)
        os.kill(broker.pid, signal.SIGCONT)
        stop_broker(broker)


async def test_sigterm_under_load_finishes_in_flight_requests_and_loses_nothing(
    tmp_path: Path,
) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL)
    try:
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(gateway.url, stop, senders=16))
        await asyncio.sleep(2)
        gateway.process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(gateway.process.wait, 30)
        stop.set()
        result = await load
        # uvicorn re-raises SIGTERM once it has shut down gracefully: -15 is a clean exit here.
        assert exit_code in (0, -signal.SIGTERM)
        assert set(result.statuses) - {"200"} <= ALLOWED_FAILURES, result.statuses
        report = await arrived(TopicReader(f"127.0.0.1:{port}"), gateway, result)
        assert report["acknowledged"] > 0
        assert report["lost"] == 0, report
        assert any(line["event"] == "stopped" for line in gateway.log_lines())
    finally:
        if gateway.process.poll() is None:
            gateway.process.kill()
        stop_broker(broker)


async def test_spool_command_shows_and_drains_what_a_dead_gateway_left(tmp_path: Path) -> None:
    port = free_port()
    broker = start_broker(port, quiet=True)
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, FAST_SPOOL)
    try:
        await load_for(gateway.url, 1)
        os.kill(broker.pid, signal.SIGSTOP)
        stop = asyncio.Event()
        load = asyncio.create_task(send_load(gateway.url, stop, senders=4))
        await wait_ready(gateway.admin_url, "degraded")
        await asyncio.sleep(2)
        gateway.process.kill()
        gateway.process.wait()
        stop.set()
        result = await load
        os.kill(broker.pid, signal.SIGCONT)

        env = {
            **os.environ,
            "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "GATEWAY_KAFKA_CANONICAL_TOPIC": gateway.canonical_topic,
            "GATEWAY_KAFKA_DEADLETTER_TOPIC": gateway.deadletter_topic,
            "GATEWAY_SERVER_STATE_DIR": str(tmp_path / f"state-{gateway.suffix}"),
        }
        shown = await gateway_command(env, "spool")
        spooled = int(re.search(r": (\d+) records\n", shown).group(1))  # type: ignore[union-attr]
        assert spooled > 0, shown
        assert "not held" in shown
        drained = await gateway_command(env, "spool", "--drain")
        assert f"forwarded {spooled} records" in drained, drained
        assert ": 0 records" in drained
        report = await arrived(TopicReader(f"127.0.0.1:{port}"), gateway, result)
        assert report["lost"] == 0, report
    finally:
        os.kill(broker.pid, signal.SIGCONT)
        stop_broker(broker)
