"""Dedupe claims across concurrent requests: two requests carrying the same events in other
orders must never wait on each other for ever. Such a pair held two request slots, and every
later re-send of those events waited behind them, until the process restarted.

The pipeline runs here as the gateway runs it (real Publisher on the embedded broker, real
Deduper); the test itself plays a third request whose publish fails, which is how two waiting
requests can come to hold one event each.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson

from gateway.canonical import NormalizeContext
from gateway.kafka.publisher import Publisher
from gateway.pipeline import Pipeline, Tally, split_request
from gateway.settings import load_settings
from gateway.vendors import registry
from gateway.vendors.base import Inbound
from tests.support.caliper import assessment_started, envelope, expected_id
from tests.support.gateway import ROOT
from tests.support.kafka import TopicReader


async def test_two_requests_with_the_same_events_in_other_orders_both_finish(
    broker: str, kafka: TopicReader
) -> None:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": f"claims.canonical.{suffix}",
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"claims.deadletter.{suffix}",
    }
    settings = load_settings(ROOT / "gateway.dev.toml", environ=env)
    publisher = Publisher(settings.kafka, settings.server)
    pipeline = Pipeline.for_settings(settings, publisher)
    caliper = registry()["caliper"]
    first, second = assessment_started(), assessment_started()
    # Whichever id the claims come in first, the request to fail holds the other one.
    held = max(expected_id(first), expected_id(second))

    def request(*events: dict[str, object]) -> asyncio.Task[object]:
        body = orjson.dumps(envelope(*events))
        items = split_request(caliper, Inbound("POST", "application/json", body), pipeline.schemas)
        ctx = NormalizeContext("demo", "caliper", datetime.now(UTC), "r")
        stats = Tally()
        return asyncio.create_task(pipeline.publish_items(caliper, items, ctx, stats))

    await publisher.start()
    try:
        deduper = pipeline._deduper  # the test plays a third request's claim
        assert await deduper.claim(held)
        ordered = request(first, second) if held == expected_id(second) else request(second, first)
        await asyncio.sleep(0.1)  # it claimed one event and waits for the held one
        deduper.settle(held, published=False)  # the third request failed to publish
        reverse = request(second, first) if held == expected_id(second) else request(first, second)
        await asyncio.wait_for(asyncio.gather(ordered, reverse), 15)
    finally:
        await publisher.stop()
    wanted = {expected_id(first), expected_id(second)}
    records = await kafka.read(
        settings.kafka.canonical_topic, lambda rs: wanted <= {r.json()["id"] for r in rs}
    )
    assert sorted(r.json()["id"] for r in records) == sorted(wanted)
