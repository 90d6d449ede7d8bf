"""Publishes records to Kafka and returns only once they are safe: acknowledged or spooled.

One producer per process (librdkafka, gateway/kafka_producer.py) is shared by every request, so
records of concurrent requests travel in the same batches (`linger_ms`, `max_batch_bytes`); a
request awaits only its own records' acks.
When Kafka does not acknowledge within `spool.ack_deadline_seconds` (or is known to be down) the
records are written to the local spool (gateway/spool.py) instead, and a forwarder drains the
spool to Kafka, oldest first, once it is back. While the spool holds anything, new records join
its end rather than overtaking it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from gateway.errors import BrokerUnavailable, GatewayError
from gateway.kafka_producer import AsyncProducer, ProducerError
from gateway.kafka_security import aiokafka_connection
from gateway.records import OutRecord
from gateway.settings import KafkaSettings, ServerSettings, SpoolSettings
from gateway.spool import Spool
from gateway.tracing import NO_TRACER, PUBLISH_SPAN, AttributeValue, Tracer

__all__ = ["OutRecord", "Publisher"]

# Room for headers and the dead-letter envelope around a body of the largest accepted size.
_RECORD_OVERHEAD: Final = 64 * 1024
# A readiness probe must answer well within a Kubernetes probe's patience.
_READY_TIMEOUT_SECONDS: Final = 2.0
_CONNECT_RETRY_SECONDS: Final = 1.0
_MAX_BACKOFF_SECONDS: Final = 5.0

log = structlog.get_logger("gateway.publisher")


class Publisher:
    """The gateway's Kafka producer with its spool: start, publish safely, readiness, stop."""

    def __init__(
        self,
        kafka: KafkaSettings,
        server: ServerSettings,
        spool: SpoolSettings | None = None,
        *,
        tracer: Tracer = NO_TRACER,
    ) -> None:
        self._kafka = kafka
        self.tracer = tracer
        # Told (outcome "acknowledged" or "spooled", seconds) after each publish: for metrics.
        self.on_published: Callable[[str, float], None] | None = None
        self._spool_settings = spool or SpoolSettings(enabled=False)
        # A dead letter can carry a whole request body, so a record may be as large as a body.
        self.max_record_bytes = max(kafka.max_batch_bytes, server.max_body_bytes + _RECORD_OVERHEAD)
        self.spool: Spool | None = None
        if self._spool_settings.enabled:
            self.spool = Spool(Path(server.state_dir) / "spool", self._spool_settings.max_bytes)
        self._producer: AsyncProducer | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while the spool is empty
        self._tasks: list[asyncio.Task[None]] = []
        self.spooled_total = 0
        self.forwarded_total = 0
        self.broker_errors_total = 0
        # Transitions only, so that an outage logs one broker_lost / spool_engaged, not one a send.
        self._broker_up = False
        self._spooling = False

    @property
    def connected(self) -> bool:
        """True once the producer is connected to the cluster."""
        return self._producer is not None

    async def start(self, connect_timeout: float = 30.0) -> None:
        """Open the spool and connect; without a spool, fail if Kafka stays unreachable."""
        if self.spool is not None:
            await self.spool.open()
            if self.spool.depth:
                self._spooling = True
                log.info("spool_engaged", depth=self.spool.depth, reason="left from last run")
        try:
            await self._connect(connect_timeout)
        except (KafkaError, ProducerError):
            if self.spool is None:
                raise
            log.warning("broker_lost", kafka=self._kafka.bootstrap_servers, at="start")
            self._tasks.append(asyncio.create_task(self._connect_forever()))
        if self.spool is not None:
            self._tasks.append(asyncio.create_task(self._forward()))

    async def stop(self) -> None:
        """Stop forwarding, flush what the producer holds, disconnect and close the spool."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.flush(self._kafka.publish_timeout_seconds)
            await producer.stop()
        if self.spool is not None:
            await self.spool.close()

    async def publish(self, records: Sequence[OutRecord]) -> bool:
        """Return once every record is acknowledged by Kafka (False) or spooled (True).

        Raises BrokerUnavailable when neither happens: no spool and no acks within
        `publish_timeout_seconds`, or a full spool (SpoolFull). Records still buffered in the
        producer may reach Kafka later too: their ids are deterministic, so such a late copy is a
        duplicate consumers recognise, never a different event.
        """
        if not records:
            return False
        started = time.perf_counter()
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "kafka",
            "gateway.records": len(records),
        }
        with self.tracer.span(PUBLISH_SPAN, **attributes) as span:
            try:
                spooled = await self._publish(records)
            except GatewayError as error:
                span.fail(error.code)
                raise
            outcome = "spooled" if spooled else "acknowledged"
            span.set("gateway.outcome", outcome)
        if self.on_published is not None:
            self.on_published(outcome, time.perf_counter() - started)
        return spooled

    async def _publish(self, records: Sequence[OutRecord]) -> bool:
        spool = self.spool
        if spool is None:
            await self._send(records, self._kafka.publish_timeout_seconds)
            return False
        if spool.depth == 0 and self.connected:
            try:
                await self._send(records, self._spool_settings.ack_deadline_seconds)
            except BrokerUnavailable as error:
                reason = error.message
            else:
                return False
        else:
            reason = "records wait behind the spool" if spool.depth else "not connected to Kafka"
        await spool.append(list(records))
        self._drained.clear()
        self.spooled_total += len(records)
        self._wake.set()
        if not self._spooling:
            self._spooling = True
            log.warning("spool_engaged", depth=spool.depth, reason=reason)
        return True

    async def drained(self) -> None:
        """Return once the spool is empty (at once without a spool)."""
        if self.spool is not None:
            await self._drained.wait()

    async def ready(self) -> str:
        """`ready` (Kafka answers), `degraded` (it does not, the spool takes records) or
        `unavailable` (it does not and nothing can take records)."""
        producer = self._producer
        if producer is not None:
            try:
                await producer.metadata(_READY_TIMEOUT_SECONDS)
            except ProducerError:
                pass
            else:
                return "degraded" if self.spool is not None and self.spool.depth else "ready"
        if self.spool is not None and not self.spool.full:
            return "degraded"
        return "unavailable"

    async def _send(self, records: Sequence[OutRecord], seconds: float) -> None:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the gateway is not connected to Kafka")
        try:
            acked = producer.send(records)
            # A timer rather than asyncio.timeout(): the same deadline at about half the cost
            # (3.5 vs 4.5-7 us a request, measured on its own).
            deadline = asyncio.get_running_loop().call_later(seconds, _expire, acked)
            try:
                await acked
            finally:
                deadline.cancel()
        except (TimeoutError, ProducerError) as exc:
            self.broker_errors_total += 1
            if self._broker_up:
                self._broker_up = False
                log.warning(
                    "broker_lost",
                    kafka=self._kafka.bootstrap_servers,
                    at="send",
                    error=type(exc).__name__,
                )
            raise BrokerUnavailable(f"Kafka did not acknowledge the records: {exc!r}") from exc
        if not self._broker_up:
            self._broker_up = True
            log.info("broker_connected", kafka=self._kafka.bootstrap_servers, at="send")

    async def _forward(self) -> None:
        """Drain the spool to Kafka, oldest first, backing off while Kafka is unavailable."""
        assert self.spool is not None  # noqa: S101  # only started with a spool
        spool, backoff, check_topics = self.spool, 0.2, True
        while True:
            if not spool.depth:
                check_topics = True
                self._drained.set()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                continue
            batch = await spool.peek(self._spool_settings.drain_batch)
            try:
                if check_topics and self._kafka.create_topics:
                    # Spooling means Kafka was away: one that comes back empty (a new cluster,
                    # the in-memory dev broker) must get our topics before our records.
                    await self._ensure_topics()
                    check_topics = False
                await self._send([s.record for s in batch], self._kafka.publish_timeout_seconds)
            except (BrokerUnavailable, KafkaError, ProducerError, OSError):
                check_topics = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.2
            await spool.remove(batch)
            self.forwarded_total += len(batch)
            if not spool.depth:
                self._spooling = False
                log.info("spool_drained", forwarded=self.forwarded_total)

    async def _connect(self, connect_timeout: float) -> None:
        kafka = self._kafka
        producer = AsyncProducer(kafka, self.max_record_bytes)
        await producer.start(connect_timeout)
        if kafka.create_topics:
            try:
                await self._ensure_topics()
            except KafkaError:
                await producer.stop()
                raise
        self._producer = producer
        self._broker_up = True
        log.info("broker_connected", kafka=kafka.bootstrap_servers, at="connect")
        self._wake.set()

    async def _connect_forever(self) -> None:
        while self._producer is None:
            try:
                await self._connect(_CONNECT_RETRY_SECONDS)
            except (KafkaError, ProducerError):
                await asyncio.sleep(_CONNECT_RETRY_SECONDS)

    async def _ensure_topics(self) -> None:
        kafka = self._kafka
        admin = AIOKafkaAdminClient(client_id=kafka.client_id, **aiokafka_connection(kafka))
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


def _expire(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_exception(TimeoutError("no acknowledgement within the deadline"))
