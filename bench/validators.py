"""Which JSON Schema validator the hot path uses: pure-Python `jsonschema` or `jsonschema-rs`.

Validates a 3-event Caliper envelope (the envelope and each event, as the pipeline does) many
times with each engine and prints the time per envelope. Run with `make bench`.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from typing import Any

import jsonschema
import orjson
from referencing import Registry, Resource

from gateway.schemas import DRAFT, SchemaSet, load_documents
from tests.support.caliper import IMS

ENVELOPE: Any = orjson.loads((IMS / "v1p2" / "caliperEnvelopeEventBatch.json").read_bytes())
CALIPER = "caliper/caliper.schema.json"


def rust_validate() -> Callable[[], bool]:
    schemas = SchemaSet()
    envelope = schemas.get(f"{CALIPER}#/$defs/envelope").validator
    event = schemas.get(f"{CALIPER}#/$defs/event").validator
    entity = schemas.get(f"{CALIPER}#/$defs/entityDescription").validator

    def run() -> bool:
        ok = bool(envelope.is_valid(ENVELOPE))
        for item in ENVELOPE["data"]:
            ok &= bool((event if "action" in item else entity).is_valid(item))
        return ok

    return run


def python_validate() -> Callable[[], bool]:
    doc = load_documents()[CALIPER]
    registry: Registry[Any] = Registry().with_resource(doc["$id"], Resource.from_contents(doc))

    def compiled(name: str) -> Any:
        return jsonschema.Draft202012Validator(
            {"$schema": DRAFT, "$ref": f"{doc['$id']}#/$defs/{name}"},
            registry=registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )

    envelope, event, entity = compiled("envelope"), compiled("event"), compiled("entityDescription")

    def run() -> bool:
        ok = bool(envelope.is_valid(ENVELOPE))
        for item in ENVELOPE["data"]:
            ok &= bool((event if "action" in item else entity).is_valid(item))
        return ok

    return run


def per_call(run: Callable[[], bool], seconds: float = 2.0) -> float:
    """Mean seconds per call over about `seconds` of repeated calls (after a warm-up)."""
    if not run():
        raise SystemExit("the benchmark envelope must be valid: the schema or fixture changed")
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(50):
            run()
        calls += 50
    return elapsed / calls


def main() -> None:
    events = len(ENVELOPE["data"])
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"payload: caliperEnvelopeEventBatch.json ({events} events), envelope + each event\n")
    python = per_call(python_validate())
    rust = per_call(rust_validate())
    print(f"{'validator':<28}{'us / envelope':>16}{'envelopes / s':>16}")
    for name, cost in (("jsonschema (pure Python)", python), ("jsonschema-rs (compiled)", rust)):
        print(f"{name:<28}{cost * 1e6:>16.1f}{1 / cost:>16.0f}")
    print(f"\njsonschema-rs is {python / rust:.0f}x faster")


if __name__ == "__main__":
    main()
