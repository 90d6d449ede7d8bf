"""`make bench`: the gateway against the HTTP ceiling and a naive gateway, over real HTTP and a
real broker, with a load generator that is not Python (wrk).

For each target: start the embedded broker (once) and the server, warm up, drive it with wrk
for a fixed time with ids unique per request (bench/lua/unique.lua), then check that the records
in Kafka equal the events acknowledged. Prints one table and writes it to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.broker import start_broker, stop_broker
from gateway.consumers import stop_consumer
from tests.caliper_fixtures import IMS

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua" / "unique.lua"
CALIPER_HEADERS = ("Authorization: Bearer dev-token", "Content-Type: application/json")


@dataclass(frozen=True)
class Payload:
    """A vendor's typical request: a body template with {{UNIQUE}} markers."""

    name: str
    path: str
    headers: tuple[str, ...]
    template: str
    events: int  # events per request


@dataclass
class Outcome:
    """One measured run."""

    target: str
    payload: str
    workers: int
    requests: int = 0
    errors: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    peak_rss_mb: float = 0.0
    acknowledged_events: int = 0
    records_in_kafka: int | None = None
    notes: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def caliper_payload() -> Payload:
    """The 3-event IMS batch envelope, each event id made unique per request."""
    envelope = orjson.loads((IMS / "v1p2" / "caliperEnvelopeEventBatch.json").read_bytes())
    for index, event in enumerate(envelope["data"]):
        event["id"] = f"urn:uuid:bench-{index}-{{{{UNIQUE}}}}"
    return Payload(
        "caliper 3-event envelope",
        "/v1/caliper",
        CALIPER_HEADERS,
        orjson.dumps(envelope).decode(),
        len(envelope["data"]),
    )


def parse_duration(text: str) -> float:
    """wrk's `1.23ms` / `850.00us` / `1.01s` in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str, payload: Payload, seconds: int, connections: int, delay_ms: float | None = None
) -> dict[str, float]:
    """Drive `url` with wrk; returns requests, errors, rps, p50_ms, p99_ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as template:
        template.write(payload.template)
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA)]
    for header in payload.headers:
        command += ["-H", header]
    command += [url + payload.path, "--", template.name]
    env = {**os.environ, **({"BENCH_DELAY_MS": str(delay_ms)} if delay_ms else {})}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    os.unlink(template.name)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    if socket:
        errors += sum(int(n) for n in socket.groups())
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", out, re.MULTILINE))
    return {
        "requests": requests,
        "errors": errors,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": parse_duration(percentiles["50"]),
        "p99_ms": parse_duration(percentiles["99"]),
    }


class RssSampler:
    """Peak resident memory of a process and all its children, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def current(self) -> int:
        tree, total = self._tree(), 0
        for pid in tree:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmRSS:\s+(\d+) kB", status)
            total += int(match.group(1)) * 1024 if match else 0
        return total

    def _tree(self) -> set[int]:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(stat.parent.name)] = int(fields[1])
        tree = {self.pid}
        grew = True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return tree

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, self.current())


def wait_listening(url: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            httpx.post(url + "/healthz", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def count_records(bootstrap: str, topic: str) -> int:
    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = await consumer.end_offsets(partitions) if partitions else {}
            return sum(ends.values())
        finally:
            await stop_consumer(consumer)

    return asyncio.run(count())


def start_server(
    target: str, workers: int, bootstrap: str, topic: str, state: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ}
    if target == "gateway":
        env |= {
            "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GATEWAY_KAFKA_CANONICAL_TOPIC": topic,
            "GATEWAY_KAFKA_DEADLETTER_TOPIC": topic + ".deadletter",
            "GATEWAY_SERVER_STATE_DIR": str(state),
        }
        command = [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ]
    else:
        env |= {"BENCH_KAFKA": bootstrap, "BENCH_TOPIC": topic}
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            f"bench.{target}:create_app",
            "--factory",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_listening(url)
    return process, url


def measure(
    target: str,
    *,
    workers: int,
    payload: Payload,
    bootstrap: str,
    seconds: int,
    connections: int,
    state: Path,
) -> Outcome:
    topic = f"bench.{target}.{uuid.uuid4().hex[:8]}"
    process, url = start_server(target, workers, bootstrap, topic, state)
    outcome = Outcome(target, payload.name, workers)
    try:
        warm = run_wrk(url, payload, 2, connections)
        with RssSampler(process.pid) as rss:
            result = run_wrk(url, payload, seconds, connections)
        outcome.requests = int(result["requests"])
        outcome.errors = int(result["errors"])
        outcome.rps = result["rps"]
        outcome.p50_ms, outcome.p99_ms = result["p50_ms"], result["p99_ms"]
        outcome.peak_rss_mb = rss.peak / 1024 / 1024
        acknowledged = (warm["requests"] - warm["errors"]) + (result["requests"] - result["errors"])
        outcome.acknowledged_events = int(acknowledged) * payload.events
        if target != "ceiling":
            time.sleep(1)
            outcome.records_in_kafka = count_records(bootstrap, topic)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return outcome


def table(outcomes: list[Outcome], ceiling: float, naive: float) -> str:
    """The results as a Markdown table."""
    lines = [
        "| target | payload | workers | req/s | events/s | p50 ms | p99 ms | errors | peak RSS MB "
        "| events acked | records in Kafka | vs ceiling | vs naive |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        events = o.rps * (o.acknowledged_events / max(o.requests, 1) if o.requests else 0)
        in_kafka = "-" if o.records_in_kafka is None else f"{o.records_in_kafka:,}"
        lines.append(
            f"| {o.target} | {o.payload} | {o.workers} | {o.rps:,.0f} | {events:,.0f} "
            f"| {o.p50_ms:.2f} | {o.p99_ms:.2f} | {o.errors} | {o.peak_rss_mb:,.0f} "
            f"| {o.acknowledged_events:,} | {in_kafka} "
            f"| {o.rps / ceiling:.2f}x | {o.rps / naive:.1f}x |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (make bench installs it)", file=sys.stderr)
        return 2
    payload = caliper_payload()
    state = Path(tempfile.mkdtemp(prefix="bench-state-"))
    broker_port = free_port()
    broker = start_broker(broker_port, quiet=True)
    bootstrap = f"127.0.0.1:{broker_port}"
    outcomes: list[Outcome] = []
    try:
        plan = [
            ("ceiling", 1),
            ("naive", 1),
            ("gateway", 1),
            ("ceiling", args.workers),
            ("gateway", args.workers),
        ]
        for target, workers in plan:
            print(f"measuring {target} with {workers} worker(s)...", file=sys.stderr, flush=True)
            outcomes.append(
                measure(
                    target,
                    workers=workers,
                    payload=payload,
                    bootstrap=bootstrap,
                    seconds=args.seconds,
                    connections=args.connections,
                    state=state,
                )
            )
    finally:
        stop_broker(broker)
    ceiling = next(o.rps for o in outcomes if o.target == "ceiling" and o.workers == 1)
    naive = next(o.rps for o in outcomes if o.target == "naive")
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    print(f"\n{machine}; wrk -t2 -c{args.connections}, {args.seconds}s per run\n")
    print(table(outcomes, ceiling, naive))
    for o in outcomes:
        if o.records_in_kafka is not None and o.records_in_kafka < o.acknowledged_events:
            print(
                f"LOST: {o.target} acknowledged {o.acknowledged_events} events, "
                f"Kafka holds {o.records_in_kafka}",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
