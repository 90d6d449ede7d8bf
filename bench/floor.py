"""The floor: the least any gateway built on this stack does for a Caliper envelope.

Starlette reads the body; jiter parses it (repeated keys refused); `jsonschema-rs` validates the
envelope and each event against the gateway's own schema; each event is produced to Kafka with
acks=all through the gateway's librdkafka producer and settings; the answer waits for the acks.
No normalizing, dedupe, logging, metrics, authentication or spool. Served like the gateway, it
tells how close to the HTTP ceiling this stack can get at all: what the gateway adds is measured
against it. Configured by BENCH_KAFKA and BENCH_TOPIC.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import jiter
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.kafka.producer import AsyncProducer
from gateway.kafka.records import OutRecord
from gateway.schemas import SchemaSet
from gateway.settings import KafkaSettings

CALIPER = "caliper/caliper.schema.json#/$defs/"


def create_app() -> Starlette:
    """Factory for `uvicorn --factory`."""
    schemas = SchemaSet()
    envelope_schema = schemas.get(CALIPER + "envelope").validator
    event_schema = schemas.get(CALIPER + "event").validator
    # The gateway's producer settings, but for idempotence: the embedded broker has none.
    kafka = dataclasses.replace(
        KafkaSettings(), bootstrap_servers=os.environ["BENCH_KAFKA"], enable_idempotence=False
    )
    producer = AsyncProducer(kafka, kafka.max_batch_bytes)
    topic = os.environ["BENCH_TOPIC"]

    async def caliper(request: Request) -> Response:
        envelope = jiter.from_json(await request.body(), catch_duplicate_keys=True)
        events = envelope["data"]
        if not envelope_schema.is_valid(envelope) or not all(map(event_schema.is_valid, events)):
            return Response(status_code=400)
        await producer.send(
            [OutRecord(topic, event["id"].encode(), orjson.dumps(event)) for event in events]
        )
        return Response(status_code=200)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await producer.start(30)
        yield
        await producer.flush(kafka.publish_timeout_seconds)
        await producer.stop()

    return Starlette(routes=[Route("/v1/caliper", caliper, methods=["POST"])], lifespan=lifespan)
