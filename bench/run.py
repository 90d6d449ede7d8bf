"""`make bench`: the gateway against the HTTP ceiling, the floor (the least this stack does for a
request) and a naive gateway, over real HTTP and a real broker, driven by a load generator that is
not Python (wrk).

For each run: start an empty embedded broker and the server, warm up, drive it with wrk for a
fixed time with ids unique per request, sample the server's memory and CPU, then check that Kafka
holds as many records as events were acknowledged. Each run has a broker of its own: the embedded
broker keeps everything in memory and its fetches get dearer as it fills, which would tax every
run for the ones before it. Then: the gateway's p99 at half its maximum
rate, and (with --soak) its memory under sustained load. Prints Markdown tables; with --write,
also puts them in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import resource
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
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import payloads
from bench.payloads import Payload
from gateway.kafka.broker import start_broker, stop_broker
from gateway.kafka.consumers import stop_consumer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
WRK_THREADS = 2
MARK = "<!-- make bench writes below this line -->"
# The soak's bound on remembered events: reached within its first quarter, so the run shows the
# memory at its configured bound (the default 1,000,000 is reached after ~11 min at this rate).
SOAK_DEDUPE_ENTRIES = 60_000


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
    events_per_request: int = 0
    acknowledged_events: int = 0
    records_in_kafka: int | None = None
    rss_samples_mb: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0  # the server's processes, over the measured run
    broker_cpu_seconds: float = 0.0  # the broker, over the measured run
    wrk_cpu_seconds: float = 0.0  # the load generator, over the measured run

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else 0.0

    @property
    def others_us_per_request(self) -> float:
        """The broker's and the load generator's CPU per request: what the server shares the
        machine's cores with."""
        others = self.broker_cpu_seconds + self.wrk_cpu_seconds
        return others / self.requests * 1e6 if self.requests else 0.0

    @property
    def cores_used(self) -> float:
        """Cores kept busy by server, broker and load generator together, on average."""
        return self.rps * (self.cpu_us_per_request + self.others_us_per_request) / 1e6

    @property
    def lost(self) -> bool:
        return (
            self.records_in_kafka is not None and self.records_in_kafka < self.acknowledged_events
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_duration(text: str) -> float:
    """wrk's `1.23ms` / `850.00us` / `1.01s` in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    url: str, payload: Payload, seconds: int, connections: int, delay_ms: float | None = None
) -> dict[str, float]:
    """Drive `url` with wrk; returns requests, errors, rps, p50_ms, p99_ms."""
    with tempfile.NamedTemporaryFile("w", suffix=".bench", delete=False) as data:
        data.write(payload.data())
    command = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(payload.script),
    ]
    for header in payload.headers:
        command += ["-H", header]
    command += [url + payload.path, "--", data.name, str(WRK_THREADS)]
    env = {**os.environ, **({"BENCH_DELAY_MS": f"{delay_ms:.3f}"} if delay_ms else {})}
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
    finally:
        os.unlink(data.name)

    def number(pattern: str) -> float:
        match = re.search(pattern, out)
        if match is None:
            raise RuntimeError(f"unexpected wrk output:\n{out}")
        return float(match.group(1))

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", out, re.MULTILINE))
    return {
        "requests": number(r"(\d+) requests in"),
        "errors": errors,
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": parse_duration(percentiles["50"]),
        "p99_ms": parse_duration(percentiles["99"]),
    }


class RssSampler:
    """Resident memory of a process and all its children, sampled from /proc."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.every = every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its children so far."""
        ticks = 0
        for pid in self._tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def current(self) -> int:
        total = 0
        for pid in self._tree():
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
        tree, grew = {self.pid}, True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in tree and pid not in tree:
                    tree.add(pid)
                    grew = True
        return tree

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.current())


def wait_listening(url: str, within: float = 30, ready: str = "") -> None:
    """Until `url` answers anything, or with `ready` (a URL) until that answers 200."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(ready or url + "/healthz", timeout=1)
            if not ready or answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def count_records(bootstrap: str, topic: str) -> int:
    """Records in a topic (the sum of its partitions' end offsets)."""

    async def count() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = await consumer.end_offsets(partitions) if partitions else {}
            return int(sum(ends.values()))
        finally:
            await stop_consumer(consumer)

    return asyncio.run(count())


def start_server(
    target: str,
    workers: int,
    bootstrap: str,
    topic: str,
    state: Path,
    *,
    settings: dict[str, str] | None = None,
    module: str = "gateway.cli",
) -> tuple[subprocess.Popen[bytes], str]:
    """The gateway (`gateway serve`, with `settings` as GATEWAY_* variables; `module`: another
    entry point taking its arguments, bench/profiled.py) or a reference app under uvicorn, same
    server settings."""
    port = free_port()
    env = dict(os.environ) | (settings or {})
    ready = ""
    if target == "gateway":
        admin_port = free_port()
        env |= {
            "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GATEWAY_KAFKA_CANONICAL_TOPIC": topic,
            "GATEWAY_KAFKA_DEADLETTER_TOPIC": topic + ".deadletter",
            "GATEWAY_SERVER_STATE_DIR": str(state / topic),
            "GATEWAY_SERVER_ADMIN_PORT": str(admin_port),
        }
        # Its probes are on the admin port; the public port answers vendor routes only.
        ready = f"http://127.0.0.1:{admin_port}/readyz"
        command = [
            sys.executable,
            "-m",
            module,
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
    wait_listening(url, ready=ready)
    return process, url


@dataclass(frozen=True)
class Bench:
    """What every run shares."""

    state: Path
    seconds: int
    connections: int

    def measure(
        self,
        target: str,
        workers: int,
        payload: Payload,
        *,
        delay_ms: float | None = None,
        seconds: int | None = None,
        rss_every: float = 0.5,
        settings: dict[str, str] | None = None,
    ) -> Outcome:
        topic = f"bench.{target}.{uuid.uuid4().hex[:8]}"
        broker_port = free_port()
        bootstrap = f"127.0.0.1:{broker_port}"
        broker = start_broker(broker_port, quiet=True)
        try:
            process, url = start_server(
                target, workers, bootstrap, topic, self.state, settings=settings
            )
        except BaseException:
            stop_broker(broker)
            raise
        outcome = Outcome(target, payload.name, workers, events_per_request=payload.events)
        try:
            warm_payload, measured_payload = payload.split(0.15)
            warm = run_wrk(url, warm_payload, 2, self.connections, delay_ms)
            broker_cpu = RssSampler(broker.pid)
            with RssSampler(process.pid, rss_every) as rss:
                cpu_before, broker_before = rss.cpu_seconds(), broker_cpu.cpu_seconds()
                wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
                result = run_wrk(
                    url, measured_payload, seconds or self.seconds, self.connections, delay_ms
                )
                # Only wrk ends (and is reaped) during the run: the children's usage grows by it.
                wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
                outcome.cpu_seconds = rss.cpu_seconds() - cpu_before
                outcome.broker_cpu_seconds = broker_cpu.cpu_seconds() - broker_before
            outcome.wrk_cpu_seconds = (wrk_after.ru_utime + wrk_after.ru_stime) - (
                wrk_before.ru_utime + wrk_before.ru_stime
            )
            outcome.requests, outcome.errors = int(result["requests"]), int(result["errors"])
            outcome.rps, outcome.p50_ms, outcome.p99_ms = (
                result["rps"],
                result["p50_ms"],
                result["p99_ms"],
            )
            outcome.peak_rss_mb = rss.peak / 2**20
            outcome.rss_samples_mb = [s / 2**20 for s in rss.samples]
            acknowledged = (warm["requests"] - warm["errors"]) + (
                result["requests"] - result["errors"]
            )
            outcome.acknowledged_events = int(acknowledged) * payload.events
            if target != "ceiling":
                time.sleep(1)  # the last acks of requests wrk stopped waiting for
                outcome.records_in_kafka = count_records(bootstrap, topic)
        finally:
            process.terminate()
            process.wait(timeout=60)
            stop_broker(broker)
        return outcome


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def median_run(runs: list[Outcome]) -> Outcome:
    """The run with the median req/s (the upper one of an even count)."""
    return sorted(runs, key=lambda run: run.rps)[len(runs) // 2]


def index(rounds: list[list[Outcome]], target: str, workers: int) -> int:
    """Where a planned run sits in every round."""
    return next(i for i, o in enumerate(rounds[0]) if o.target == target and o.workers == workers)


def throughput_table(rounds: list[list[Outcome]]) -> str:
    """One row per planned run: the round with the median req/s, the range over the rounds, and
    ratios taken within each round (ceiling, naive and gateway measured minutes apart, not
    across the whole bench) and then their median."""
    plan = rounds[0]
    ceiling, naive = index(rounds, "ceiling", 1), index(rounds, "naive", 1)
    lines = [
        "| target | payload | workers | req/s (median) | req/s (range) | events/s | p50 ms "
        "| p99 ms | errors | CPU us/req | broker + wrk CPU us/req | peak RSS MB | events acked "
        "| records in Kafka | vs ceiling | vs naive |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for planned in range(len(plan)):
        runs = [r[planned] for r in rounds]
        o = median_run(runs)
        vs_ceiling = median([r[planned].rps / r[ceiling].rps for r in rounds])
        vs_naive = median([r[planned].rps / r[naive].rps for r in rounds])
        spread = f"{min(r.rps for r in runs):,.0f}-{max(r.rps for r in runs):,.0f}"
        in_kafka = "-" if o.records_in_kafka is None else f"{o.records_in_kafka:,}"
        lines.append(
            f"| {o.target} | {o.payload} | {o.workers} | {o.rps:,.0f} | {spread} "
            f"| {o.rps * o.events_per_request:,.0f} | {o.p50_ms:.2f} | {o.p99_ms:.2f} "
            f"| {sum(r.errors for r in runs)} | {o.cpu_us_per_request:,.0f} "
            f"| {o.others_us_per_request:,.0f} | {o.peak_rss_mb:,.0f} "
            f"| {o.acknowledged_events:,} | {in_kafka} "
            f"| {vs_ceiling:.2f}x | {vs_naive:.1f}x |"
        )
    return "\n".join(lines)


def ratio_lines(rounds: list[list[Outcome]], workers: int) -> list[str]:
    """The floor against the ceiling and the gateway against the floor, and the gateway's
    scaling with workers: medians of ratios taken within each round."""
    ceiling, floor = index(rounds, "ceiling", 1), index(rounds, "floor", 1)
    one, many = index(rounds, "gateway", 1), index(rounds, "gateway", workers)
    floor_share = median([r[floor].rps / r[ceiling].rps for r in rounds])
    floor_cores = median([r[floor].cores_used for r in rounds])
    gateway_share = median([r[one].rps / r[floor].rps for r in rounds])
    # What decides the share when the floor's thread is its limit: CPU per request.
    cpu_share = median([r[one].cpu_us_per_request / r[floor].cpu_us_per_request for r in rounds])
    scaling = median([r[many].rps / r[one].rps for r in rounds])
    cpu_one = median([r[one].cpu_us_per_request for r in rounds])
    cpu_many = median([r[many].cpu_us_per_request for r in rounds])
    return [
        f"floor (parse, validate, produce, await the acks; nothing else): {floor_share:.2f}x the "
        f"ceiling, keeping {floor_cores:.2f} of the {os.cpu_count()} cores busy with the broker "
        f"and wrk; the gateway {gateway_share:.2f}x the floor's req/s, its CPU per request "
        f"{cpu_share:.2f}x the floor's (medians of the rounds' ratios)",
        f"scaling: {workers} workers give {scaling:.2f}x one worker's req/s (median of the "
        f"rounds); CPU per request {cpu_one:,.0f} us with 1, {cpu_many:,.0f} us with {workers} "
        f"(the {os.cpu_count()} cores are shared with wrk and the broker)",
    ]


def soak_line(outcome: Outcome) -> str:
    samples = outcome.rss_samples_mb
    if len(samples) < 4:
        return "soak: too short to tell"
    quarter = len(samples) // 4
    averages = [
        sum(q) / len(q) for q in (samples[i * quarter : (i + 1) * quarter] for i in range(4))
    ]
    filled = SOAK_DEDUPE_ENTRIES / (outcome.rps * outcome.events_per_request)
    return (
        f"soak: {outcome.requests:,} requests at {outcome.rps:,.0f} req/s, {outcome.errors} "
        f"errors; dedupe.max_entries {SOAK_DEDUPE_ENTRIES:,} (full after ~{filled:.0f} s); RSS by "
        f"quarter {' / '.join(f'{a:.0f}' for a in averages)} MB, peak {outcome.peak_rss_mb:.0f} MB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--soak", type=int, default=0, help="seconds of sustained load (0: none)")
    parser.add_argument("--write", action="store_true", help="also write bench/RESULTS.md")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (make bench installs it)", file=sys.stderr)
        return 2
    caliper = payloads.caliper()
    bench = Bench(
        Path(tempfile.mkdtemp(prefix="bench-state-")),
        args.seconds,
        args.connections,
    )
    paced: Outcome | None = None
    soak: Outcome | None = None
    plan = [
        ("ceiling", 1, caliper),
        ("naive", 1, caliper),
        ("floor", 1, caliper),
        ("gateway", 1, caliper),
        ("gateway", 1, payloads.canvas()),
        ("gateway", 1, payloads.pearson(150_000)),
        ("ceiling", args.workers, caliper),
        ("gateway", args.workers, caliper),
    ]
    # The machine's speed drifts by tens of percent over minutes (a shared VM): every planned run
    # is repeated in rounds, and ratios are taken within a round.
    rounds: list[list[Outcome]] = []
    for number in range(1, args.rounds + 1):
        rounds.append([])
        for target, workers, payload in plan:
            print(
                f"round {number}/{args.rounds}: {target}, {workers} worker(s), {payload.name}...",
                file=sys.stderr,
            )
            rounds[-1].append(bench.measure(target, workers, payload))
    outcomes = [o for r in rounds for o in r]
    top = median_run([r[index(rounds, "gateway", 1)] for r in rounds])
    # Half the maximum rate, paced: each connection waits between its requests. A short
    # probe tells how much of a connection's cycle the request itself takes.
    target_rps = top.rps / 2
    cycle_ms = args.connections * 1000 / target_rps
    print(f"p99 at half rate ({target_rps:,.0f} req/s)...", file=sys.stderr)
    probe = bench.measure("gateway", 1, caliper, delay_ms=cycle_ms, seconds=3)
    spent_ms = args.connections * 1000 / probe.rps - cycle_ms
    delay_ms = max(cycle_ms - spent_ms, 0.1)
    paced = bench.measure("gateway", 1, caliper, delay_ms=delay_ms)
    if args.soak:
        print(f"soak for {args.soak}s at half rate...", file=sys.stderr)
        soak = bench.measure(
            "gateway",
            1,
            caliper,
            delay_ms=delay_ms,
            seconds=args.soak,
            rss_every=5.0,
            settings={"GATEWAY_DEDUPE_MAX_ENTRIES": str(SOAK_DEDUPE_ENTRIES)},
        )
    machine = (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}; "
        f"wrk -t{WRK_THREADS} -c{args.connections}, {args.seconds}s per run after a 2s warm-up, "
        f"{args.rounds} rounds; broker, load generator and servers share the machine"
    )
    report = [machine, "", throughput_table(rounds), ""]
    report.append(
        f"p99 at half the gateway's maximum rate: {paced.p99_ms:.1f} ms at {paced.rps:,.0f} "
        f"req/s (p50 {paced.p50_ms:.1f} ms, {paced.errors} errors)"
    )
    report += ratio_lines(rounds, args.workers)
    if soak is not None:
        report.append(soak_line(soak))
    text = "\n".join(report)
    print("\n" + text)
    if args.write:
        before = RESULTS.read_text().split(MARK)[0] if RESULTS.exists() else ""
        RESULTS.write_text(f"{before}{MARK}\n\n## Latest `make bench`\n\n{text}\n")
    lost = [o for o in [*outcomes, paced, soak] if o is not None and o.lost]
    for o in lost:
        print(
            f"LOST: {o.target} {o.payload}: acknowledged {o.acknowledged_events} events, "
            f"Kafka holds {o.records_in_kafka}",
            file=sys.stderr,
        )
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
