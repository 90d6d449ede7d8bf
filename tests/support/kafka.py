"""Reading what the gateway published, as a downstream consumer would: a topic from the
beginning, with aiokafka against the embedded broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class KafkaRecord:
    """A record read back from a topic."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int = -1

    def json(self) -> Any:
        return orjson.loads(self.value)


class TopicReader:
    """Reads a topic from the beginning, as a downstream consumer would."""

    def __init__(self, bootstrap: str, **options: Any) -> None:
        self.bootstrap = bootstrap
        self.options = options  # aiokafka's connection options (TLS, SASL), as the gateway's

    async def read(
        self,
        topic: str,
        until: Callable[[list[KafkaRecord]], bool],
        within: float = 15.0,
    ) -> list[KafkaRecord]:
        """Every record of `topic`, read until `until(records)` holds or `within` seconds pass."""
        connection = {"bootstrap_servers": self.bootstrap, **self.options}
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **connection)
        await consumer.start()
        try:
            deadline = time.monotonic() + within
            partitions = consumer.partitions_for_topic(topic)
            while not partitions and time.monotonic() < deadline:
                # A topic created a moment ago (or not yet) is not in the client's metadata.
                await asyncio.sleep(0.2)
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                return []
            assignment = [TopicPartition(topic, p) for p in sorted(partitions or ())]
            consumer.assign(assignment)
            await consumer.seek_to_beginning(*assignment)
            records: list[KafkaRecord] = []
            while time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    records.extend(
                        KafkaRecord(m.topic, m.key, m.value, dict(m.headers), m.partition)
                        for m in messages
                    )
                if until(records):
                    break
            return records
        finally:
            await consumer.stop()

    async def settle(self, topic: str, quiet: float = 1.5) -> list[KafkaRecord]:
        """Every record of `topic` once nothing new has arrived for `quiet` seconds."""
        seen: list[int] = []
        started = time.monotonic()

        def quiet_enough(records: list[KafkaRecord]) -> bool:
            seen.append(len(records))
            return time.monotonic() - started > quiet and len(set(seen[-8:])) == 1

        return await self.read(topic, quiet_enough, within=quiet + 10)
