"""`gateway serve` (one worker) with every step of a request timed where it runs: the budget of
a served request, measured in the server under load rather than step by step in a loop.

Each step (a gateway function, a vendor's function, uvicorn's parsing, the request's task, the
acks' hand-over) is wrapped before the app is built; its time is counted exclusive of the steps
it calls, with `time.perf_counter()` (no system call), and each outermost step (a task's step, a
callback of the loop) also by the thread's CPU clock: the steps within it count its CPU time,
shared in proportion to their wall time (the thread may have been preempted meanwhile, or have
waited for the GIL while librdkafka's thread ran a delivery callback). A coroutine is timed by
its steps, never across its waits. What no step holds is the event loop's own work (uvloop, in
C: polling, socket reads, task switching) and the callbacks no step names. `SIGUSR1` writes the
totals so far to the JSON file named by `BENCH_PROFILE_OUT` (`bench/stages.py` takes one before
and one after its measured run).

Timing costs: a request makes about 40 timed calls, and the served gateway spends about a
quarter more CPU per request with them (bench/RESULTS.md): shares, not absolute costs, are what
this measures.
Usage: python -m bench.profiled serve --port PORT --workers 1 (the arguments of `gateway`).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Generator
from dataclasses import fields, is_dataclass
from time import perf_counter, thread_time
from typing import Any

import orjson

TOTALS: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter[str] = collections.Counter()
# Time of the steps running inside the step at each level (subtracted from it: exclusive).
_NESTED: list[float] = []
# The steps timed within the current outermost one, with their exclusive wall time: turned into
# CPU time when it ends, by its ratio of CPU to wall time (the thread may have been preempted,
# or waited for the GIL while librdkafka's thread ran a delivery callback).
_WITHIN: list[tuple[str, float]] = []
_OUTER_CPU: list[float] = [0.0]


def _enter() -> float:
    if not _NESTED:
        _OUTER_CPU[0] = thread_time()
    _NESTED.append(0.0)
    return perf_counter()


def _leave(name: str, started: float) -> None:
    elapsed = perf_counter() - started
    inner = _NESTED.pop()
    CALLS[name] += 1
    _WITHIN.append((name, elapsed - inner))
    if _NESTED:
        _NESTED[-1] += elapsed
        return
    cpu = thread_time() - _OUTER_CPU[0]
    ratio = min(cpu / elapsed, 1.0) if elapsed > 0 else 1.0
    for step, wall in _WITHIN:
        TOTALS[step] += wall * ratio
    _WITHIN.clear()


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` timed as `name`; a coroutine function's coroutines are timed step by step."""
    if asyncio.iscoroutinefunction(function):

        @functools.wraps(function)
        def start(*args: Any, **kwargs: Any) -> Timed:
            return Timed(name, function(*args, **kwargs))

        return start

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        started = _enter()
        try:
            return function(*args, **kwargs)
        finally:
            _leave(name, started)

    return call


class Timed(Coroutine[Any, Any, Any]):
    """A coroutine whose every step (from one wait to the next) is timed as `name`."""

    __slots__ = ("_coro", "_name")

    def __init__(self, name: str, coro: Coroutine[Any, Any, Any]) -> None:
        self._name = name
        self._coro = coro

    def send(self, value: Any) -> Any:
        started = _enter()
        try:
            return self._coro.send(value)
        finally:
            _leave(self._name, started)

    def throw(self, *args: Any) -> Any:
        started = _enter()
        try:
            return self._coro.throw(*args)
        finally:
            _leave(self._name, started)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> Timed:
        return self

    def __next__(self) -> Any:
        return self.send(None)


def _replace_everywhere(original: Callable[..., Any], wrapper: Callable[..., Any]) -> None:
    """Put `wrapper` wherever a loaded gateway module holds `original` by name."""
    for name, module in list(sys.modules.items()):
        if not (name == "gateway" or name.startswith(("gateway.", "bench."))):
            continue
        for attribute, value in list(vars(module).items()):
            if value is original:
                setattr(module, attribute, wrapper)


def _method(cls: type, name: str, label: str) -> None:
    method = vars(cls)[name]
    if isinstance(method, staticmethod):
        setattr(cls, name, staticmethod(timed(label, method.__func__)))
    else:
        setattr(cls, name, timed(label, method))


def install() -> None:
    """Wrap the steps (before the app is built: it binds some of them at start-up)."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # noqa: PLC0415

    from gateway import app, boundary, canonical, limits, pipeline, privacy  # noqa: PLC0415
    from gateway.admission import BodyDeadlines  # noqa: PLC0415
    from gateway.auth import Authenticator  # noqa: PLC0415
    from gateway.dedupe import Deduper  # noqa: PLC0415
    from gateway.http_server import GatewayHttpProtocol  # noqa: PLC0415
    from gateway.kafka import producer, publisher  # noqa: PLC0415
    from gateway.observability import Metrics  # noqa: PLC0415
    from gateway.ratelimit import RateLimiter  # noqa: PLC0415
    from gateway.schemas import CompiledSchema  # noqa: PLC0415
    from gateway.vendors import registry  # noqa: PLC0415

    for function, label in (
        (limits.loads_json, "parse the body (jiter, limits)"),
        (canonical.content_digest, "digest the events"),
        (canonical.to_record, "stamp the canonical records"),
        (app._head, "translate the head (Starlette request, request id)"),
        (app._scope_head, "translate the head (from the scope, request id)"),
        (app._response, "the answer (Starlette response)"),
        (limits.check_head, "admission: the head's framing"),
    ):
        _replace_everywhere(function, timed(label, function))
    _method(GatewayHttpProtocol, "data_received", "HTTP: read, parse, start the request's task")
    _method(RequestResponseCycle, "send", "HTTP: write the answer (uvicorn)")
    _method(pipeline.Pipeline, "_take", "the pipeline's own steps (admission .. reply)")
    call = app._Gateway.__call__

    # An async function itself: uvicorn tells an ASGI 3 app by its coroutine function.
    async def dispatch(self: Any, scope: Any, receive: Any, send: Any) -> None:
        await Timed("the ingest routes' dispatch", call(self, scope, receive, send))

    app._Gateway.__call__ = dispatch  # type: ignore[method-assign]
    _method(RateLimiter, "check_client", "admission: rate limits")
    _method(RateLimiter, "take", "admission: rate limits")
    _method(Authenticator, "authenticate_head", "authentication (bearer)")
    _method(BodyDeadlines, "start", "the body's deadline")
    _method(BodyDeadlines, "stop", "the body's deadline")
    _method(pipeline.Pipeline, "_read", "read the body")
    _method(CompiledSchema, "errors", "validate (jsonschema-rs)")
    _method(privacy.Privacy, "canonical", "privacy policy")
    _method(Deduper, "claim", "dedupe")
    _method(Deduper, "settle", "dedupe")
    _method(pipeline.Pipeline, "_publish", "publish: dedupe keys, serialize, records")
    _method(pipeline.Pipeline, "publish_items", "publish: the pipeline's glue")
    _method(publisher.Publisher, "publish", "publish: the publisher (span, outcome)")
    _method(publisher.Publisher, "_publish", "publish: the publisher (span, outcome)")
    _method(publisher.Publisher, "_send", "publish: the publisher (span, outcome)")
    _method(publisher.Publisher, "_acked", "publish: await the acks")
    _method(producer.AsyncProducer, "send", "publish: produce (librdkafka)")
    _method(producer.AsyncProducer, "_deliver", "the acks' hand-over (futures resolved)")
    _method(Metrics, "observe_publish", "log line and metrics")
    _method(boundary.Boundary, "ingested", "log line and metrics")
    _replace_everywhere(
        pipeline.normalize_items, timed("normalize: the loop", pipeline.normalize_items)
    )
    for vendor in registry().values():
        if not is_dataclass(vendor):
            continue
        for field in fields(vendor):
            if field.name in ("decode", "split", "normalize"):
                wrapped = timed(f"{field.name} ({vendor.name})", getattr(vendor, field.name))
                object.__setattr__(vendor, field.name, wrapped)
    _replace_everywhere(
        pipeline.split_request, timed("split: the envelope's glue", pipeline.split_request)
    )


def _task_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """Every task timed by its steps: what a request's task does outside the named steps
    (Starlette's middleware and router, uvicorn's answer, the pipeline's glue) is its own."""
    name = getattr(getattr(coro, "cr_code", None), "co_qualname", "a task")
    label = (
        "request task: Starlette's middleware (and router), uvicorn's request cycle"
        if name == "RequestResponseCycle.run_asgi"
        else f"other tasks ({name})"
    )
    return asyncio.Task(Timed(label, coro), loop=loop, **kwargs)


def _dump(*_: Any) -> None:
    out = os.environ["BENCH_PROFILE_OUT"]
    with open(out, "wb") as file:
        file.write(orjson.dumps({"totals": TOTALS, "calls": CALLS}))


def main() -> int:
    if os.environ.get("BENCH_PROFILE_MODE") != "tasks":
        install()
    signal.signal(signal.SIGUSR1, _dump)
    import uvicorn.server  # noqa: PLC0415

    serve = uvicorn.server.Server.serve

    async def serve_timed(self: Any, sockets: Any = None) -> None:
        if os.environ.get("BENCH_PROFILE_MODE") != "steps":
            asyncio.get_running_loop().set_task_factory(_task_factory)
        await serve(self, sockets)

    uvicorn.server.Server.serve = serve_timed  # type: ignore[method-assign]
    from gateway.cli import main as gateway  # noqa: PLC0415

    return gateway(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
