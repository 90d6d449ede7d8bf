"""Helpers for the gateway's own short-lived Kafka consumers (replay, benchmarks, read models)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop_consumer(consumer: Any) -> None:
    """Stop an AIOKafkaConsumer. aiokafka 0.14 can re-raise the cancellation of its own internal
    task when a consumer without a group stops soon after starting; that is not ours to see."""
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()
