"""What a dashboard and an on-call person rely on: the metric names, types and labels on /metrics
(the admin port), one scrape counting every worker of `gateway serve --workers N`, the lifecycle
log lines through a broker outage (once per transition, not once per request), and
docs/operations.md listing every metric and every log event. Real broker, real `gateway serve`,
real signals (SIGSTOP freezes the broker the way a hung Kafka does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN, Gateway, start_gateway, stop_gateway
from tests.support.http import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
OPERATIONS = ROOT / "docs" / "operations.md"
LIFECYCLE = {
    "started",
    "stopped",
    "broker_connected",
    "broker_lost",
    "spool_engaged",
    "spool_drained",
}
FAST_SPOOL = {"GATEWAY_SPOOL_ACK_DEADLINE_SECONDS": "1"}
TWO_WORKERS = {"GATEWAY_SERVER_WORKERS": "2"}


async def scrape(client: httpx.AsyncClient) -> dict[str, Metric]:
    """The metric families a client of the admin port is shown, without the client library's
    standard `_created` series (which the text format shows as gauges of their own)."""
    text = (await client.get("/metrics")).text
    families = text_string_to_metric_families(text)
    return {f.name: f for f in families if not f.name.endswith("_created")}


def value(families: dict[str, Metric], family: str, sample: str, **labels: str) -> float | None:
    """The value of one series (`sample` with exactly `labels`), None when it is not exposed."""
    for s in families[family].samples:
        if s.name == sample and s.labels == labels:
            return float(s.value)
    return None


def label_names(family: Metric) -> set[str]:
    return {name for s in family.samples for name in s.labels} - {"le"}


async def post_event(client: httpx.AsyncClient) -> int:
    body = orjson.dumps(envelope(assessment_started()))
    return (await client.post("/v1/caliper", content=body, headers=AUTH)).status_code


def lifecycle(gateway: Gateway) -> list[str]:
    return [line["event"] for line in gateway.log_lines() if line["event"] in LIFECYCLE]


async def wait_for_line(gateway: Gateway, event: str, count: int = 1, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if sum(1 for e in lifecycle(gateway) if e == event) >= count:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {count}x {event} in {lifecycle(gateway)}")


@pytest.fixture
def own_broker() -> Iterator[tuple[str, int]]:
    """A broker of the test's own, which it may freeze; always thawed and stopped at the end."""
    port = free_port()
    process = start_broker(port, quiet=True)
    try:
        yield f"127.0.0.1:{port}", process.pid
    finally:
        os.kill(process.pid, signal.SIGCONT)
        stop_broker(process)


async def test_metrics_carry_the_names_types_and_labels_dashboards_use(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    bad = assessment_started()
    del bad["actor"]
    body = orjson.dumps(envelope(assessment_started(), bad))
    assert (await client.post("/v1/caliper", content=body, headers=AUTH)).status_code == 200
    refused = await client.post("/v1/caliper", content=body, headers={"Authorization": "nope"})
    assert refused.status_code == 401

    families = await scrape(admin)
    types = {name: family.type for name, family in families.items()}
    assert types == {
        "gateway_requests": "counter",
        "gateway_events": "counter",
        "gateway_request_duration_seconds": "histogram",
        "gateway_publish_duration_seconds": "histogram",
        "gateway_in_flight": "gauge",
        "gateway_spool_depth": "gauge",
        "gateway_spool_oldest_age_seconds": "gauge",
        "gateway_spool_forwarded": "counter",
        "gateway_spool_spooled": "counter",
        "gateway_broker_errors": "counter",
        "gateway_records_refused": "counter",
        "gateway_auth_failures": "counter",
    }
    assert label_names(families["gateway_requests"]) == {"tenant", "vendor", "status"}
    assert label_names(families["gateway_events"]) == {"tenant", "vendor", "outcome"}
    assert label_names(families["gateway_request_duration_seconds"]) == {"vendor"}
    assert label_names(families["gateway_publish_duration_seconds"]) == {"outcome"}
    assert label_names(families["gateway_in_flight"]) == set()

    requests = "gateway_requests_total"
    ok = {"tenant": "demo", "vendor": "caliper", "status": "200"}
    assert (value(families, "gateway_requests", requests, **ok) or 0) >= 1
    # Unauthenticated: the tenant is not known, and never taken from the request.
    unknown = {"tenant": "unknown", "vendor": "caliper", "status": "401"}
    assert (value(families, "gateway_requests", requests, **unknown) or 0) >= 1
    tenants = {s.labels["tenant"] for s in families["gateway_requests"].samples}
    assert tenants <= {"demo", "unknown"}
    for outcome in ("published", "deadlettered"):
        labels = {"tenant": "demo", "vendor": "caliper", "outcome": outcome}
        assert (value(families, "gateway_events", "gateway_events_total", **labels) or 0) >= 1
    publish = "gateway_publish_duration_seconds"
    acknowledged = value(families, publish, f"{publish}_count", outcome="acknowledged")
    assert (acknowledged or 0) >= 1
    assert value(families, "gateway_in_flight", "gateway_in_flight") == 0


async def test_every_metric_is_documented_with_its_type_and_labels(
    client: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    await post_event(client)  # so that every labelled family has a series
    docs = OPERATIONS.read_text(encoding="utf-8")
    rows = {
        match.group(1): line
        for line in docs.splitlines()
        if (match := re.match(r"\| `(gateway_\w+)` \|", line))
    }
    for name, family in (await scrape(admin)).items():
        exposed = f"{name}_total" if family.type == "counter" else name
        assert exposed in rows, f"{exposed} is not in {OPERATIONS.name}"
        row = rows[exposed]
        assert f"| {family.type} |" in row, row
        for label in label_names(family):
            assert f"`{label}`" in row, (label, row)


def test_every_log_event_is_documented() -> None:
    docs = OPERATIONS.read_text(encoding="utf-8")
    logged = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        logged |= set(re.findall(r'log\.(?:debug|info|warning|error|exception)\(\s*"(\w+)"', text))
    assert logged >= LIFECYCLE
    undocumented = sorted(event for event in logged if f"`{event}`" not in docs)
    assert not undocumented, f"log events missing from {OPERATIONS.name}: {undocumented}"


async def test_a_frozen_broker_logs_one_line_per_transition_and_times_publishes(
    own_broker: tuple[str, int], tmp_path: Path
) -> None:
    bootstrap, broker_pid = own_broker
    gateway = start_gateway(bootstrap, tmp_path, FAST_SPOOL)
    try:
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            assert await post_event(client) == 200
            os.kill(broker_pid, signal.SIGSTOP)
            # Concurrent senders all hit the dead broker at once: still one line each.
            statuses = await asyncio.gather(*(post_event(client) for _ in range(8)))
            assert statuses == [200] * 8  # spooled
            assert [await post_event(client) for _ in range(2)] == [200, 200]
            frozen = lifecycle(gateway)
            assert frozen.count("broker_lost") == 1, frozen
            assert frozen.count("spool_engaged") == 1, frozen

            families = await scrape(admin)
            publish = "gateway_publish_duration_seconds"
            count = f"{publish}_count"
            assert value(families, publish, count, outcome="spooled") == 10
            assert value(families, publish, count, outcome="acknowledged") == 1
            errors = value(families, "gateway_broker_errors", "gateway_broker_errors_total")
            assert (errors or 0) >= 1

            os.kill(broker_pid, signal.SIGCONT)
            await wait_for_line(gateway, "spool_drained")
            assert await post_event(client) == 200
            families = await scrape(admin)
            assert value(families, publish, count, outcome="acknowledged") == 2
    finally:
        stop_gateway(gateway)
    assert lifecycle(gateway) == [
        "broker_connected",
        "started",
        "broker_lost",
        "spool_engaged",
        "broker_connected",
        "spool_drained",
        "stopped",
    ]
    lines = {line["event"]: line for line in gateway.log_lines() if line["event"] == "broker_lost"}
    assert lines["broker_lost"]["at"] == "send"
    assert lines["broker_lost"]["kafka"] == bootstrap


async def test_without_a_spool_waiting_requests_show_in_flight_and_the_outage_logs_once(
    own_broker: tuple[str, int], tmp_path: Path
) -> None:
    bootstrap, broker_pid = own_broker
    no_spool = {"GATEWAY_SPOOL_ENABLED": "false", "GATEWAY_KAFKA_PUBLISH_TIMEOUT_SECONDS": "3"}
    gateway = start_gateway(bootstrap, tmp_path, no_spool)
    try:
        async with (
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as client,
            httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin,
        ):
            assert await post_event(client) == 200
            os.kill(broker_pid, signal.SIGSTOP)
            waiting = [asyncio.create_task(post_event(client)) for _ in range(4)]
            seen = 0.0
            deadline = time.monotonic() + 10
            while seen < 4 and time.monotonic() < deadline:
                families = await scrape(admin)
                seen = value(families, "gateway_in_flight", "gateway_in_flight") or 0.0
                await asyncio.sleep(0.05)
            assert seen == 4
            assert await asyncio.gather(*waiting) == [503] * 4
            assert await post_event(client) == 503
            assert lifecycle(gateway).count("broker_lost") == 1

            os.kill(broker_pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while await post_event(client) != 200:
                assert time.monotonic() < deadline, "the gateway never published again"
            families = await scrape(admin)
            assert value(families, "gateway_in_flight", "gateway_in_flight") == 0
            failed = {"tenant": "demo", "vendor": "caliper", "status": "503"}
            assert (
                value(families, "gateway_requests", "gateway_requests_total", **failed) or 0
            ) >= 5
    finally:
        stop_gateway(gateway)
    events = lifecycle(gateway)
    assert events[:3] == ["broker_connected", "started", "broker_lost"], events
    assert events.count("broker_lost") == events.count("broker_connected") - 1, events
    assert events[-2:] == ["broker_connected", "stopped"], events
    assert "spool_engaged" not in events


# --- several workers ------------------------------------------------------------------------------


def worker_pids(gateway: Gateway, count: int = 2) -> list[int]:
    """The `count` worker processes of a `gateway serve --workers N` (uvicorn spawns them), once
    they all run."""
    deadline = time.monotonic() + 15
    while True:
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                command = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError):
                continue  # gone meanwhile
            if parent == gateway.process.pid and b"spawn_main" in command:
                pids.append(int(stat.parent.name))
        if len(pids) == count:
            return sorted(pids)
        assert time.monotonic() < deadline, f"workers: {pids}"
        time.sleep(0.1)


@contextmanager
def served_by(gateway: Gateway, worker: int) -> Iterator[None]:
    """New connections meanwhile go to `worker`: the other workers, which share its listening
    sockets, are stopped (SIGSTOP) for the while, well under uvicorn's 5 s health check."""
    others = [pid for pid in worker_pids(gateway) if pid != worker]
    for pid in others:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in others:
            os.kill(pid, signal.SIGCONT)


async def post_events(gateway: Gateway, count: int) -> None:
    """`count` Caliper events on new connections, all at once; each must be taken."""
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        statuses = await asyncio.gather(*(post_event(client) for _ in range(count)))
    assert statuses == [200] * count


async def scrape_new(gateway: Gateway) -> dict[str, Metric]:
    """A scrape on a new connection (see `served_by`)."""
    async with httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as admin:
        return await scrape(admin)


async def scrape_until(
    gateway: Gateway,
    check: Callable[[dict[str, Metric]], bool],
    within: float,
    via: int | None = None,
) -> dict[str, Metric]:
    """Scrape (answered by the worker `via`, else by any) until `check` holds; the last scrape
    either way. Each worker writes its gauges every second: one not scraped may lag as long."""
    deadline = time.monotonic() + within
    while True:
        with served_by(gateway, via) if via else contextlib.nullcontext():
            families = await scrape_new(gateway)
        if check(families) or time.monotonic() > deadline:
            return families
        await asyncio.sleep(0.2)


def caliper_totals(families: dict[str, Metric]) -> tuple[float | None, ...]:
    """Requests, published events and request durations observed, of the demo tenant's Caliper."""
    requests = {"tenant": "demo", "vendor": "caliper", "status": "200"}
    published = {"tenant": "demo", "vendor": "caliper", "outcome": "published"}
    duration = "gateway_request_duration_seconds"
    return (
        value(families, "gateway_requests", "gateway_requests_total", **requests),
        value(families, "gateway_events", "gateway_events_total", **published),
        value(families, duration, f"{duration}_count", vendor="caliper"),
    )


async def test_one_scrape_counts_the_requests_of_every_worker(broker: str, tmp_path: Path) -> None:
    gateway = start_gateway(broker, tmp_path, TWO_WORKERS)
    try:
        first, second = worker_pids(gateway)
        with served_by(gateway, first):
            await post_events(gateway, 7)
        with served_by(gateway, second):
            await post_events(gateway, 5)
        for worker in (first, second):
            with served_by(gateway, worker):
                families = await scrape_new(gateway)
            assert caliper_totals(families) == (12, 12, 12), worker
            assert value(families, "gateway_in_flight", "gateway_in_flight") == 0
    finally:
        stop_gateway(gateway)
    # Restarted on the same state directory: counting starts again from 0, as with one process.
    restarted = start_gateway(broker, tmp_path, TWO_WORKERS, suffix=gateway.suffix)
    try:
        first, second = worker_pids(restarted)
        with served_by(restarted, first):
            await post_events(restarted, 3)
        with served_by(restarted, second):
            families = await scrape_new(restarted)
        assert caliper_totals(families) == (3, 3, 3)
    finally:
        stop_gateway(restarted)


async def test_with_several_workers_the_spool_gauges_add_up_every_worker(
    own_broker: tuple[str, int], tmp_path: Path
) -> None:
    bootstrap, broker_pid = own_broker
    gateway = start_gateway(bootstrap, tmp_path, {**FAST_SPOOL, **TWO_WORKERS})
    depth = ("gateway_spool_depth", "gateway_spool_depth")
    spooled = ("gateway_spool_spooled", "gateway_spool_spooled_total")
    forwarded = ("gateway_spool_forwarded", "gateway_spool_forwarded_total")
    age = ("gateway_spool_oldest_age_seconds", "gateway_spool_oldest_age_seconds")
    try:
        first, second = worker_pids(gateway)
        os.kill(broker_pid, signal.SIGSTOP)
        with served_by(gateway, first):
            await post_events(gateway, 3)  # spooled after the 1 s ack deadline
        with served_by(gateway, second):
            await post_events(gateway, 5)
        for worker in (first, second):
            families = await scrape_until(gateway, lambda f: value(f, *depth) == 8, 5, worker)
            assert value(families, *depth) == 8, worker
            assert value(families, *spooled) == 8, worker
            assert (value(families, *age) or 0) > 0, worker

        os.kill(broker_pid, signal.SIGCONT)
        drained = (0, 8)
        families = await scrape_until(
            gateway, lambda f: (value(f, *depth), value(f, *forwarded)) == drained, 30
        )
        assert (value(families, *depth), value(families, *forwarded)) == drained
    finally:
        stop_gateway(gateway)


async def test_a_killed_worker_leaves_no_ghost_in_the_gauges(
    own_broker: tuple[str, int], tmp_path: Path
) -> None:
    bootstrap, broker_pid = own_broker
    waits = {
        **TWO_WORKERS,
        "GATEWAY_SPOOL_ENABLED": "false",
        "GATEWAY_KAFKA_PUBLISH_TIMEOUT_SECONDS": "30",
    }
    gateway = start_gateway(bootstrap, tmp_path, waits)
    try:
        first, second = worker_pids(gateway)
        os.kill(broker_pid, signal.SIGSTOP)
        in_flight = ("gateway_in_flight", "gateway_in_flight")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
            with served_by(gateway, second):
                waiting = asyncio.create_task(post_event(client))  # waits for Kafka's acks
                # Taken by the second worker, the only one that runs (and answers) meanwhile.
                taken = await scrape_until(gateway, lambda f: value(f, *in_flight) == 1, 3)
                assert value(taken, *in_flight) == 1
            seen = await scrape_until(gateway, lambda f: value(f, *in_flight) == 1, 5, first)
            assert value(seen, *in_flight) == 1, "the first worker does not count it"

            os.kill(second, signal.SIGKILL)  # an OOM kill: no shutdown, no last words
            # uvicorn starts another worker; the dead one's request is not in flight any more.
            after = await scrape_until(gateway, lambda f: value(f, *in_flight) == 0, 15)
            assert value(after, *in_flight) == 0, "the dead worker's request stays in flight"
            await asyncio.gather(waiting, return_exceptions=True)  # its connection was reset
        os.kill(broker_pid, signal.SIGCONT)
    finally:
        stop_gateway(gateway)
