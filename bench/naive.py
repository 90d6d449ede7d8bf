"""The naive gateway: what one writes in an afternoon, as a reference point for the benchmark.

Starlette, `jsonschema.validate` of the Caliper envelope and of each event against the same schema
file, and `send_and_wait` per event to Kafka (one produce round trip per event, no batching).
Configured by BENCH_KAFKA and BENCH_TOPIC.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jsonschema
from aiokafka import AIOKafkaProducer
from referencing import Registry, Resource
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.schemas import SCHEMA_DIR


def create_app() -> Starlette:
    """Factory for `uvicorn --factory`."""
    doc = json.loads((SCHEMA_DIR / "caliper" / "caliper.schema.json").read_text())
    registry: Registry[Any] = Registry().with_resource(doc["$id"], Resource.from_contents(doc))
    envelope_schema = {"$ref": doc["$id"] + "#/$defs/envelope"}
    event_schema = {"$ref": doc["$id"] + "#/$defs/event"}
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["BENCH_KAFKA"], acks="all")
    topic = os.environ["BENCH_TOPIC"]

    async def caliper(request: Request) -> Response:
        body = json.loads(await request.body())
        jsonschema.validate(body, envelope_schema, registry=registry)
        for event in body["data"]:
            jsonschema.validate(event, event_schema, registry=registry)
            await producer.send_and_wait(topic, json.dumps(event).encode())
        return Response(status_code=200)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await producer.start()
        yield
        await producer.stop()

    return Starlette(routes=[Route("/v1/caliper", caliper, methods=["POST"])], lifespan=lifespan)
