"""The gateway's own short-lived Kafka consumers (replay, benchmarks, tests' readers): reading a
topic from its beginning to its end, and stopping a consumer quietly."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.kafka.security import aiokafka_connection
from gateway.settings import KafkaSettings


async def read_to_end(kafka: KafkaSettings, topic: str) -> list[bytes]:
    """The value of every record now in `topic`, oldest first per partition: from its beginning
    up to its end offsets at the call (records that arrive meanwhile may be left for later)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_connection(kafka))
    try:
        await consumer.start()  # in the try: a consumer that could not connect is closed too
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        values: list[bytes] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                values.extend(message.value for message in messages)
                if messages and messages[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        # Past the end offsets, whatever one more short poll returns is read too: some brokers
        # (the embedded dev broker) report the end of a partition one batch short.
        while batch := await consumer.getmany(*partitions, timeout_ms=300):
            for messages in batch.values():
                values.extend(message.value for message in messages)
        return values
    finally:
        await stop_consumer(consumer)


async def stop_consumer(consumer: Any) -> None:
    """Stop an AIOKafkaConsumer. aiokafka 0.14 can re-raise the cancellation of its own internal
    task when a consumer without a group stops soon after starting; that is not ours to see."""
    with contextlib.suppress(asyncio.CancelledError):
        await consumer.stop()
