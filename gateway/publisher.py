"""Publishes records to Kafka with aiokafka and waits for the broker's acknowledgement.

One producer per process is shared by every request, so records of concurrent requests travel in
the same batches (`linger_ms`, `max_batch_bytes`); a request awaits only its own records' acks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.errors import BrokerUnavailable
from gateway.settings import KafkaSettings, ServerSettings

# Room for headers and the dead-letter envelope around a body of the largest accepted size.
_RECORD_OVERHEAD: Final = 64 * 1024
# A readiness probe must answer well within a Kubernetes probe's default 1 s... of patience x3.
_READY_TIMEOUT_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One Kafka record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Publisher:
    """The gateway's Kafka producer: start, publish-and-await-acks, readiness, flush on stop."""

    def __init__(self, kafka: KafkaSettings, server: ServerSettings) -> None:
        self._kafka = kafka
        # A dead letter can carry a whole request body, so a record may be as large as a body.
        self.max_record_bytes = max(kafka.max_batch_bytes, server.max_body_bytes + _RECORD_OVERHEAD)
        self._producer: Any = None

    async def start(self, connect_timeout: float = 30.0) -> None:
        """Connect (retrying until `connect_timeout`) and create missing topics."""
        kafka = self._kafka
        deadline = asyncio.get_running_loop().time() + connect_timeout
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=kafka.bootstrap_servers,
                client_id=kafka.client_id,
                acks="all",
                enable_idempotence=kafka.enable_idempotence,
                compression_type=None if kafka.compression == "none" else kafka.compression,
                linger_ms=kafka.linger_ms,
                max_batch_size=kafka.max_batch_bytes,
                max_request_size=self.max_record_bytes,
                request_timeout_ms=int(kafka.publish_timeout_seconds * 1000),
            )
            try:
                await producer.start()
                break
            except KafkaError:
                await producer.stop()
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.5)
        self._producer = producer
        if kafka.create_topics:
            await self._ensure_topics()

    async def stop(self) -> None:
        """Flush what is buffered and disconnect."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.flush()
            await producer.stop()

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Send `records` and return once the broker has acknowledged every one of them.

        Raises BrokerUnavailable when that does not happen within `publish_timeout_seconds`.
        Records still buffered then may be delivered later: their ids are deterministic,
        so such a late copy is a duplicate consumers can recognise, never a different event.
        """
        if not records:
            return
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the gateway is not connected to Kafka")
        try:
            async with asyncio.timeout(self._kafka.publish_timeout_seconds):
                acks = [
                    await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
                    for r in records
                ]
                await asyncio.gather(*acks)
        except (TimeoutError, KafkaError) as exc:
            raise BrokerUnavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc

    async def ready(self) -> bool:
        """True when the broker answers a metadata request now."""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(_READY_TIMEOUT_SECONDS):
                await producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError, OSError):
            return False
        return True

    async def _ensure_topics(self) -> None:
        kafka = self._kafka
        admin = AIOKafkaAdminClient(
            bootstrap_servers=kafka.bootstrap_servers, client_id=kafka.client_id
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(
                    name,
                    num_partitions=kafka.topic_partitions,
                    replication_factor=kafka.topic_replication_factor,
                    topic_configs={"max.message.bytes": str(self.max_record_bytes)},
                )
                for name in (kafka.canonical_topic, kafka.deadletter_topic)
                if name not in existing
            ]
            if missing:
                # Another gateway process may create it between our list and our create.
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
        finally:
            await admin.close()
