"""Where a Caliper request's CPU time goes, stage by stage, without HTTP or Kafka.

The benchmark's 3-event envelope is taken through the gateway's own functions in a loop, each
stage timed on its own (best of five rounds), so that `make bench`'s CPU per request can be read
against what each step costs. Prints a Markdown table.
"""

from __future__ import annotations

import asyncio
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from bench import payloads
from gateway.canonical import NormalizeContext, content_digest, to_record
from gateway.dedupe import Deduper
from gateway.limits import loads_json
from gateway.pipeline import normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.vendors import registry
from gateway.vendors.base import Inbound

ROUNDS = 5


def microseconds(call: Callable[[], Any], number: int) -> float:
    """Best of ROUNDS: the least disturbed measure of what the call itself costs."""
    return min(timeit.repeat(call, number=number, repeat=ROUNDS)) / number * 1e6


def main() -> None:
    vendor = registry()["caliper"]
    schemas = SchemaSet()
    counter = iter(range(10**9))

    def body() -> bytes:
        return payloads.caliper().template.replace("{{UNIQUE}}", str(next(counter))).encode()

    raw = body()
    inbound = Inbound("POST", "application/json", raw)
    ctx = NormalizeContext("demo", vendor.name, datetime.now(UTC), "bench")
    envelope = loads_json(raw)
    envelope_schema = schemas.get(vendor.schema_ref(vendor.envelope_schema or ""))
    items = vendor.split(envelope)
    item_schemas = [schemas.get(vendor.schema_ref(item.schema)) for item in items]
    events = [vendor.normalize(item, ctx)[0] for item in items]
    digests = [content_digest(item.payload) for item in items]
    records = normalize_items(vendor, items, ctx, schemas, include_original=False).canonical
    deduper = Deduper(3600, 1_000_000)
    loop = asyncio.new_event_loop()
    fresh = iter(range(10**9))

    async def dedupe() -> None:
        for record in records:
            key = f"{record['id'][:-12]}{next(fresh):012d}"
            await deduper.claim(key)
            deduper.settle(key, published=True)

    stages: list[tuple[str, Callable[[], Any]]] = [
        ("read the body (jiter, limits)", lambda: loads_json(raw)),
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
        ("dedupe 3 records (claim + settle)", lambda: loop.run_until_complete(dedupe())),
    ]
    rows = [(name, microseconds(call, 2000)) for name, call in stages]
    pure = microseconds(
        lambda: normalize_items(
            vendor,
            split_request(vendor, inbound, schemas),
            ctx,
            schemas,
            include_original=False,
        ),
        2000,
    )
    loop.close()
    print("| stage (Caliper 3-event envelope) | us |")
    print("|---|---:|")
    for name, cost in rows:
        print(f"| {name} | {cost:.1f} |")
    print(f"| **sum of the stages** | **{sum(cost for _, cost in rows):.1f}** |")
    print(f"| the pure path in one call (read .. stamp) | {pure:.1f} |")


if __name__ == "__main__":
    main()
