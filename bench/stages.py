"""Where a Caliper request's CPU time goes: the per-request budget.

First the pure steps (parse .. stamp, serialize) one at a time in a loop, best of five rounds,
as this file always timed them. A step in a loop of its own runs warmer than among all the
others, and the steps a served request also takes (HTTP, Starlette, the log line, the
hand-over to librdkafka and back) are not there: so, with wrk installed (`make bench` installs
it), the ceiling and the gateway are then served and driven over loopback as `bench/run.py`
does, their process CPU per request read per thread, and the gateway served once more with
every step timed where it runs (bench/profiled.py): the budget of a served request, each step's
CPU per request and share, against the measured total. Prints Markdown tables.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench import payloads
from gateway.canonical import NormalizeContext, content_digest, to_record
from gateway.kafka.broker import start_broker, stop_broker
from gateway.limits import loads_json
from gateway.pipeline import normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.settings import Settings, load_settings
from gateway.vendors import registry
from gateway.vendors.base import Inbound

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
CONCURRENT = 32  # requests in flight, as wrk -c32 keeps them in `make bench`
TICK = os.sysconf("SC_CLK_TCK")


def microseconds(call: Callable[[], Any], number: int) -> float:
    """Best of ROUNDS: the least disturbed measure of what the call itself costs."""
    return min(timeit.repeat(call, number=number, repeat=ROUNDS)) / number * 1e6


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of each thread of `pid`, with its name."""
    threads: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        threads[int(task.name)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return threads


def others_cpu(pid: int, main: int) -> float:
    """CPU seconds of every thread of `pid` but `main`."""
    return sum(cpu for tid, (_, cpu) in thread_cpu(pid).items() if tid != main)


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """The log lines go where `make bench` sends the server's: nowhere (they are written all
    the same, one write per line, as the server writes them)."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(devnull)
        os.close(saved)


def bench_settings(bootstrap: str, state: str) -> Settings:
    return load_settings(
        ROOT / "gateway.dev.toml",
        {
            **os.environ,
            "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "GATEWAY_KAFKA_CANONICAL_TOPIC": f"stages.{uuid.uuid4().hex[:8]}",
            "GATEWAY_SERVER_STATE_DIR": state,
        },
    )


def pure_stages() -> list[tuple[str, float]]:
    """The steps without I/O, clock or loop, as `bench/stages.py` always timed them."""
    vendor = registry()["caliper"]
    schemas = SchemaSet()
    counter = iter(range(10**9))
    raw = payloads.caliper().template.replace("{{UNIQUE}}", str(next(counter))).encode()
    ctx = NormalizeContext("demo", vendor.name, datetime.now(UTC), "bench")
    envelope = loads_json(raw)
    envelope_schema = schemas.get(vendor.schema_ref(vendor.envelope_schema or ""))
    items = vendor.split(envelope)
    item_schemas = [schemas.get(vendor.schema_ref(item.schema)) for item in items]
    events = [vendor.normalize(item, ctx)[0] for item in items]
    digests = [content_digest(item.payload) for item in items]
    records = normalize_items(vendor, items, ctx, schemas, include_original=False).canonical
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("parse the body (jiter, limits)", lambda: loads_json(raw)),
        ("validate the envelope", lambda: envelope_schema.errors(envelope)),
        ("split into items", lambda: vendor.split(envelope)),
        (
            "validate 3 events",
            lambda: [s.errors(i.payload) for s, i in zip(item_schemas, items, strict=True)],
        ),
        ("normalize 3 events", lambda: [vendor.normalize(item, ctx) for item in items]),
        ("digest 3 events", lambda: [content_digest(item.payload) for item in items]),
        (
            "stamp 3 canonical records",
            lambda: [to_record(e, ctx, d, None) for e, d in zip(events, digests, strict=True)],
        ),
        ("serialize 3 records (orjson)", lambda: [orjson.dumps(r) for r in records]),
    ]
    return [(name, microseconds(call, 2000)) for name, call in stages]


def pure_path() -> float:
    """read .. stamp in one call, for comparison with the sum of the pure stages."""
    vendor = registry()["caliper"]
    schemas = SchemaSet()
    raw = payloads.caliper().template.replace("{{UNIQUE}}", "1").encode()
    inbound = Inbound("POST", "application/json", raw)
    ctx = NormalizeContext("demo", vendor.name, datetime.now(UTC), "bench")
    return microseconds(
        lambda: normalize_items(
            vendor, split_request(vendor, inbound, schemas), ctx, schemas, include_original=False
        ),
        2000,
    )


@dataclass
class Served:
    """A server's CPU per request under wrk, per group of threads."""

    rps: float
    total: float
    main: float
    others: float


@contextmanager
def _serving(
    target: str,
    settings: Callable[[Path], dict[str, str]] | None = None,
    module: str = "gateway.cli",
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """`target` served (1 worker) with a broker and a state directory of its own, as
    `bench/run.py` serves it: (its process, its URL, the state directory); all gone after.
    `settings`: GATEWAY_* (or other) variables, given the state directory."""
    from bench import run  # noqa: PLC0415  # wrk, servers: only with wrk installed

    port = run.free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, quiet=True)
    state = Path(tempfile.mkdtemp(prefix="stages-"))
    try:
        process, url = run.start_server(
            target,
            1,
            bootstrap,
            f"stages.{target}",
            state,
            settings=settings(state) if settings else None,
            module=module,
        )
        try:
            yield process, url, state
        finally:
            process.terminate()
            process.wait(timeout=60)
    finally:
        stop_broker(broker)
        shutil.rmtree(state, ignore_errors=True)


def served(target: str, payload: payloads.Payload, seconds: int) -> Served:
    """Serve `target` (`gateway serve` or a reference app, 1 worker) with a broker of its own
    and drive it with wrk, as `bench/run.py` does; its CPU per request by thread."""
    from bench import run  # noqa: PLC0415  # wrk: only with wrk installed

    with _serving(target) as (process, url, _):
        warm, measured = payload.split(0.15)
        run.run_wrk(url, warm, 2, CONCURRENT)
        before = thread_cpu(process.pid)
        result = run.run_wrk(url, measured, seconds, CONCURRENT)
        after = thread_cpu(process.pid)
    requests = result["requests"]
    spent = collections.Counter(
        {tid: cpu - before.get(tid, ("", 0.0))[1] for tid, (_, cpu) in after.items()}
    )
    main_us = spent.get(process.pid, 0.0) / requests * 1e6
    total_us = sum(spent.values()) / requests * 1e6
    return Served(result["rps"], total_us, main_us, total_us - main_us)


@dataclass
class Budget:
    """The served gateway's CPU per request, step by step (bench/profiled.py)."""

    rps: float
    total: float  # the process, every thread
    main: float  # the event loop's thread
    steps: list[tuple[str, float, float]]  # (step, us per request, calls per request)


def profiled(payload: payloads.Payload, seconds: int) -> Budget:
    """Serve the gateway with its steps timed (bench/profiled.py), drive it with wrk, and read
    each step's time per request between two snapshots."""
    from bench import run  # noqa: PLC0415

    def output(state: Path) -> dict[str, str]:
        return {"BENCH_PROFILE_OUT": str(state / "profile.json")}

    with _serving("gateway", output, "bench.profiled") as (process, url, state):
        out = state / "profile.json"

        def snapshot() -> dict[str, dict[str, float]]:
            out.unlink(missing_ok=True)
            process.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 10
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)
            return orjson.loads(out.read_bytes())  # type: ignore[no-any-return]

        warm, measured = payload.split(0.15)
        run.run_wrk(url, warm, 2, CONCURRENT)
        first, before = snapshot(), thread_cpu(process.pid)
        result = run.run_wrk(url, measured, seconds, CONCURRENT)
        after, last = thread_cpu(process.pid), snapshot()
    requests = result["requests"]
    spent = {tid: cpu - before.get(tid, ("", 0.0))[1] for tid, (_, cpu) in after.items()}
    steps = [
        (
            name,
            (total - first["totals"].get(name, 0.0)) / requests * 1e6,
            (last["calls"][name] - first["calls"].get(name, 0)) / requests,
        )
        for name, total in last["totals"].items()
    ]
    steps.sort(key=lambda step: -step[1])
    return Budget(
        result["rps"],
        sum(spent.values()) / requests * 1e6,
        spent.get(process.pid, 0.0) / requests * 1e6,
        steps,
    )


def budget_table(budget: Budget) -> str:
    """The served request's budget: every timed step, librdkafka's threads, and what is left
    (the event loop's own work) against the measured CPU per request."""
    named = sum(cost for _, cost, _ in budget.steps)
    threads = budget.total - budget.main
    loop_own = budget.main - named
    lines = [
        f"served with every step timed (bench/profiled.py): {budget.rps:,.0f} req/s, "
        f"{budget.total:.0f} us of process CPU per request ({budget.main:.0f} on the event "
        "loop's thread)",
        "",
        "| step (Caliper 3-event envelope, served) | us / request | calls / request | share |",
        "|---|---:|---:|---:|",
    ]
    for name, cost, calls in budget.steps:
        if cost >= 0.05:
            lines.append(f"| {name} | {cost:.1f} | {calls:.1f} | {cost / budget.total:.1%} |")
    lines.append(
        f"| librdkafka's threads (and the process's other threads) | {threads:.1f} | "
        f"| {threads / budget.total:.1%} |"
    )
    accounted = named + threads
    lines.append(
        f"| **named steps and threads** | **{accounted:.1f}** | | "
        f"**{accounted / budget.total:.1%}** |"
    )
    lines.append(
        f"| the event loop's own work (uvloop: polling, socket reads, task switching; what no "
        f"step holds) | {loop_own:.1f} | | {loop_own / budget.total:.1%} |"
    )
    return "\n".join(lines)


def main() -> None:
    pure = pure_stages()
    print("| stage (Caliper 3-event envelope), one at a time in a loop | us |")
    print("|---|---:|")
    for name, cost in pure:
        print(f"| {name} | {cost:.1f} |")
    print(f"| **sum of the stages** | **{sum(cost for _, cost in pure):.1f}** |")
    print(f"| the pure path in one call (parse .. stamp) | {pure_path():.1f} |")
    if shutil.which("wrk") is None:
        print("\n(wrk is not installed: the served request's budget is not measured)")
        return
    caliper = payloads.caliper()
    ceiling = served("ceiling", caliper, 8)
    floor = served("floor", caliper, 8)
    gateway = served("gateway", caliper, 8)
    budget = profiled(caliper, 8)
    print()
    print(
        "| served, 1 worker, wrk -c32 | req/s | CPU us/req | event loop's thread | other threads |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, outcome in (("ceiling", ceiling), ("floor", floor), ("gateway", gateway)):
        print(
            f"| {name} | {outcome.rps:,.0f} | {outcome.total:.0f} | {outcome.main:.0f} "
            f"| {outcome.others:.0f} |"
        )
    print(
        f"| gateway, every step timed | {budget.rps:,.0f} | {budget.total:.0f} | "
        f"{budget.main:.0f} | {budget.total - budget.main:.0f} |"
    )
    print()
    print(
        f"the gateway's CPU per request: {gateway.total / floor.total:.2f}x the floor's "
        f"(issue #16: at most ~1.7x)"
    )
    print()
    print(budget_table(budget))


if __name__ == "__main__":
    main()
