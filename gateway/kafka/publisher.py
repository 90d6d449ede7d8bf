"""Publishes records to Kafka and returns only once they are safe: acknowledged or spooled.

One producer per process (librdkafka, gateway/kafka/producer.py) is shared by every request, so
records of concurrent requests travel in the same batches (`linger_ms`, `max_batch_bytes`); a
request awaits only its own records' acks.
When Kafka does not acknowledge within `spool.ack_deadline_seconds` (or is known to be down) the
records are written to the local spool (gateway/kafka/spool.py) instead, and a forwarder drains
the spool to Kafka, oldest first, once it is back. While the spool holds anything, new records join
its end rather than overtaking it.

Only failures that retrying may cure go to the spool. A record Kafka refuses for good (too large
for the cluster, invalid) would block the spool for ever, and every record behind it: it is
never spooled. It is sent once more on its own (a broker refuses a whole batch for one record,
so a refused record may only have kept bad company), then replaced by its dead letter (shrunk to
fit the cluster's limit, gateway/deadletter.py), and, should Kafka refuse that too, kept in the
quarantine file (gateway/kafka/spool.py) that `gateway spool` lists. The cluster's limit is read
from the topics at start-up (`kafka.max_record_bytes` where it cannot be), so that the client
refuses an oversized record before any broker sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from gateway.deadletter import RECORD_TOO_LARGE, DeadLetter
from gateway.deadlines import Deadlines
from gateway.errors import BrokerUnavailable, GatewayError
from gateway.kafka.producer import AsyncProducer, ProducerError, RecordsRefused, Refusal
from gateway.kafka.records import OutRecord
from gateway.kafka.security import aiokafka_connection
from gateway.kafka.spool import Quarantine, Spool
from gateway.settings import KafkaSettings, ServerSettings, SpoolSettings
from gateway.tracing import NO_TRACER, PUBLISH_SPAN, AttributeValue, Tracer

__all__ = ["OutRecord", "Publisher"]

# Room for headers and the dead-letter envelope around a body of the largest accepted size: what
# the topics the gateway creates take (`max.message.bytes`).
_RECORD_OVERHEAD: Final = 64 * 1024
# Kafka's own default `message.max.bytes` (1 MiB + 12), rounded down: the limit assumed where the
# topics' cannot be read and `kafka.max_record_bytes` is 0.
DEFAULT_RECORD_BYTES: Final = 1024 * 1024
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
        # A dead letter can carry a whole request body: topics the gateway creates take records
        # as large as a body and its envelope.
        self._created_topic_bytes = server.max_body_bytes + _RECORD_OVERHEAD
        # The largest record the cluster takes: the setting, else read from the topics at
        # connection (until then, Kafka's default).
        self.max_record_bytes = kafka.max_record_bytes or DEFAULT_RECORD_BYTES
        self.spool: Spool | None = None
        if self._spool_settings.enabled:
            self.spool = Spool(Path(server.state_dir) / "spool", self._spool_settings.max_bytes)
        self.quarantine = Quarantine(Path(server.state_dir) / "spool")
        self._producer: AsyncProducer | None = None
        self._alone: AsyncProducer | None = None  # for records refused for good (see module)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while the spool is empty
        self._tasks: list[asyncio.Task[None]] = []
        self.spooled_total = 0
        self.forwarded_total = 0
        self.broker_errors_total = 0
        # (reason, outcome) -> records Kafka refused for good, by what became of them:
        # `deadlettered` (replaced by their dead letter) or `quarantined`.
        self.refused: Counter[tuple[str, str]] = Counter()
        # Transitions only, so that an outage logs one broker_lost / spool_engaged, not one a send.
        self._broker_up = False
        self._spooling = False
        # The acks' deadlines: one timer for all of them rather than one per publish.
        self._ack_deadlines: Deadlines[asyncio.Future[None]] = Deadlines(_expire)

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
        except (KafkaError, ProducerError, TimeoutError):
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
        if self._alone is not None:
            alone, self._alone = self._alone, None
            await alone.flush(self._kafka.publish_timeout_seconds)
            await alone.stop()
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
        # Without tracing, no span to make (every request publishes: its cost is per request).
        if self.tracer is NO_TRACER:
            spooled = await self._publish(records)
        else:
            spooled = await self._traced(records)
        if self.on_published is not None:
            outcome = "spooled" if spooled else "acknowledged"
            self.on_published(outcome, time.perf_counter() - started)
        return spooled

    async def _traced(self, records: Sequence[OutRecord]) -> bool:
        """`_publish` in a span of its own."""
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
            span.set("gateway.outcome", "spooled" if spooled else "acknowledged")
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
        """Return once every record is acknowledged, or refused for good and dealt with (see
        the module); raise BrokerUnavailable for anything retrying may cure."""
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("the gateway is not connected to Kafka")
        try:
            try:
                await self._acked(producer, records, seconds)
            except RecordsRefused as refused:
                await self._settle(records, refused.refused, seconds)
        except (TimeoutError, ProducerError) as exc:
            self.broker_errors_total += 1
            if self._broker_up:
                self._broker_up = False
                if isinstance(exc, ProducerError) and exc.cluster_refused:
                    # Not an outage: the cluster refuses the gateway until an operator acts.
                    log.error("kafka_refused", kafka=self._kafka.bootstrap_servers, error=str(exc))
                else:
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

    async def _acked(
        self, producer: AsyncProducer, records: Sequence[OutRecord], seconds: float
    ) -> None:
        """Send `records` and wait for their acks, at most `seconds` (TimeoutError; noticed at
        most a quarter of `seconds` late, see gateway/deadlines.py)."""
        acked = producer.send(records)
        self._ack_deadlines.set(acked, seconds)
        try:
            await acked
        finally:
            self._ack_deadlines.clear(acked)

    async def _settle(
        self, records: Sequence[OutRecord], refused: dict[int, Refusal], seconds: float
    ) -> None:
        """Deal with the records Kafka refused for good, so that none blocks another: each is
        sent again on its own unless the client refused it itself (a broker refuses a whole
        batch for one bad record: the others only kept bad company); one refused on its own is
        replaced by its dead letter, or quarantined."""
        for index, first in sorted(refused.items()):
            record, refusal = records[index], first
            if not first.local:
                try:
                    await self._acked(await self._alone_producer(), [record], seconds)
                except RecordsRefused as again:
                    refusal = again.refused[0]
                else:
                    continue
            await self._replace(record, refusal, seconds)

    async def _replace(self, record: OutRecord, refusal: Refusal, seconds: float) -> None:
        substitute = self._substitute(record, refusal)
        outcome = "quarantined"
        if substitute is not None:
            try:
                await self._acked(await self._alone_producer(), [substitute], seconds)
            except RecordsRefused:
                pass
            else:
                outcome = "deadlettered"
        if outcome == "quarantined":
            await self.quarantine.add(record, refusal.reason, refusal.detail)
        self.refused[(refusal.reason, outcome)] += 1
        # Sizes and Kafka's words only: never the record, which holds learners' data.
        log.warning(
            "record_refused",
            topic=record.topic,
            reason=refusal.reason,
            bytes=record.size,
            limit=self.max_record_bytes,
            detail=refusal.detail,
            outcome=outcome,
        )

    def _substitute(self, record: OutRecord, refusal: Refusal) -> OutRecord | None:
        """What replaces a record refused for good: its dead letter (a dead letter: itself,
        shrunk), within the cluster's limit; None when nothing can."""
        limit = self.max_record_bytes
        if refusal.reason == RECORD_TOO_LARGE and not refusal.local:
            # A broker refused what the client let through: its limit is lower than the one
            # read at start-up (a topic changed since). Half the refused size is a guess that fits.
            limit = min(limit, record.size // 2)
        if record.topic != self._kafka.deadletter_topic:
            letter = DeadLetter.refused(record, refusal.reason, refusal.detail)
            return letter.to_record(self._kafka.deadletter_topic, limit)
        if refusal.reason != RECORD_TOO_LARGE:
            return None  # an invalid dead letter stays invalid however it is written
        try:
            letter = DeadLetter.from_record(record.value)
        except ValueError:
            return None
        value = letter.to_record(record.topic, limit).value
        if len(value) >= len(record.value):
            return None
        return OutRecord(record.topic, record.key, value, record.headers)

    async def _alone_producer(self) -> AsyncProducer:
        """The producer that sends every record in a batch of its own (started when needed)."""
        if self._alone is None:
            alone = AsyncProducer(self._kafka, self.max_record_bytes, alone=True)
            await alone.start(self._kafka.publish_timeout_seconds)
            self._alone = alone
        return self._alone

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
                    await self._prepare_topics()
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
        async with asyncio.timeout(connect_timeout):
            limit = await self._prepare_topics()
        producer = AsyncProducer(kafka, limit)
        await producer.start(connect_timeout)
        self.max_record_bytes = limit
        self._producer = producer
        self._broker_up = True
        log.info(
            "broker_connected", kafka=kafka.bootstrap_servers, at="connect", max_record_bytes=limit
        )
        self._wake.set()

    async def _connect_forever(self) -> None:
        while self._producer is None:
            try:
                await self._connect(_CONNECT_RETRY_SECONDS)
            except (KafkaError, ProducerError, TimeoutError):
                await asyncio.sleep(_CONNECT_RETRY_SECONDS)

    async def _prepare_topics(self) -> int:
        """Create the topics if they are missing (`kafka.create_topics`) and return the largest
        record the cluster takes on them."""
        kafka = self._kafka
        admin = AIOKafkaAdminClient(client_id=kafka.client_id, **aiokafka_connection(kafka))
        await admin.start()
        try:
            if kafka.create_topics:
                await self._create_topics(admin)
            if kafka.max_record_bytes:
                return kafka.max_record_bytes
            return await self._cluster_limit(admin)
        finally:
            await admin.close()

    async def _create_topics(self, admin: AIOKafkaAdminClient) -> None:
        kafka = self._kafka
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                num_partitions=kafka.topic_partitions,
                replication_factor=kafka.topic_replication_factor,
                topic_configs={"max.message.bytes": str(self._created_topic_bytes)},
            )
            for name in (kafka.canonical_topic, kafka.deadletter_topic)
            if name not in existing
        ]
        if missing:
            # Another gateway process may create it between our list and our create.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)

    async def _cluster_limit(self, admin: AIOKafkaAdminClient) -> int:
        """The smaller `max.message.bytes` of the two topics, or Kafka's default where a
        topic's cannot be read (not allowed to describe it, or a broker that does not say)."""
        kafka = self._kafka
        topics = (kafka.canonical_topic, kafka.deadletter_topic)
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics]
        limits: dict[str, int] = {}
        try:
            responses = await admin.describe_configs(resources)
        except KafkaConnectionError:
            raise
        except KafkaError as exc:
            log.warning("kafka_limit_unknown", error=type(exc).__name__)
            responses = []
        for response in responses:
            for resource in response.resources:
                error_code, _, _, name, entries = resource[:5]
                for entry in entries if not error_code else ():
                    if entry[0] == "max.message.bytes" and str(entry[1]).isdigit():
                        limits[name] = int(entry[1])
        unknown = [name for name in topics if name not in limits]
        if unknown:
            log.warning(
                "kafka_limit_unknown", topics=unknown, assumed_max_record_bytes=DEFAULT_RECORD_BYTES
            )
        return min([*limits.values(), *([DEFAULT_RECORD_BYTES] if unknown else [])])


def _expire(acked: asyncio.Future[None]) -> None:
    if not acked.done():
        acked.set_exception(TimeoutError("no acknowledgement within the deadline"))
