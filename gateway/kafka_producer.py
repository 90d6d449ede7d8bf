"""An asyncio face for librdkafka's producer (confluent-kafka): send returns a future of the acks.

Why not aiokafka here (it stays for consumers and topic admin): aiokafka builds, compresses and
sends batches in Python on the event loop, about 200 us of the loop's time per 3-record request;
librdkafka does that in its own C threads, leaving the loop about 60 us (bench/RESULTS.md).

librdkafka reports acks through `poll()`. One thread polls; the acks one poll brings are handed
to the event loop in one call, not one wake-up per record. A producer's configuration follows
the gateway's `kafka` settings: acks=all, Java's murmur2 partitioner (a key lands on the same
partition as with the Java client or aiokafka), `message.timeout.ms` = the publish timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from gateway.kafka_security import librdkafka_connection
from gateway.records import OutRecord
from gateway.settings import KafkaSettings

_POLL_SECONDS: Final = 0.1


class ProducerError(Exception):
    """Kafka did not take a record: refused, timed out, or the client is stopped."""


class AsyncProducer:
    """One librdkafka producer, its poll thread, and futures for the acks of what is sent."""

    def __init__(self, kafka: KafkaSettings, max_record_bytes: int) -> None:
        self._config: dict[str, Any] = {
            **librdkafka_connection(kafka, kafka.client_id),
            "acks": "all",
            "enable.idempotence": kafka.enable_idempotence,
            "compression.type": kafka.compression,
            "linger.ms": kafka.linger_ms,
            "batch.size": kafka.max_batch_bytes,
            "message.max.bytes": max_record_bytes,
            "message.timeout.ms": int(kafka.publish_timeout_seconds * 1000),
            "partitioner": "murmur2_random",
        }
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._acks: list[tuple[asyncio.Future[None], Any]] = []  # filled by the poll thread
        self._lock = threading.Lock()

    async def start(self, seconds: float) -> None:
        """Create the client and check that the cluster answers within `seconds`."""
        self._loop = asyncio.get_running_loop()
        producer = Producer(self._config)
        try:
            await asyncio.to_thread(producer.list_topics, timeout=seconds)
        except KafkaException as exc:
            raise ProducerError(f"Kafka did not answer: {exc}") from exc
        self._producer = producer
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def send(self, records: Sequence[OutRecord]) -> asyncio.Future[None]:
        """Queue records; the future completes when the last is acknowledged, or fails with the
        first failure (a ProducerError). Raises ProducerError if a record is not even queued."""
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise ProducerError("the producer is not started")
        future: asyncio.Future[None] = loop.create_future()
        # One future and one callback for all of a request's records: a future, a callback and a
        # gather per record cost the event loop more than the records' own production.
        waiting = len(records)

        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            # Runs inside poll() or flush(), which at shutdown may run at the same time in two
            # threads: the count is kept under a lock, the ack goes to the list of the moment.
            nonlocal waiting
            with self._lock:
                if waiting <= 0:  # already failed
                    return
                waiting = waiting - 1 if error is None else 0
                if waiting == 0:
                    self._acks.append((future, error))

        try:
            for record in records:
                producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=list(record.headers),
                    on_delivery=on_delivery,
                )
        except (BufferError, KafkaException) as exc:  # local queue full, record too large
            raise ProducerError(f"Kafka did not take the record: {exc}") from exc
        if not records:
            future.set_result(None)
        return future

    async def metadata(self, seconds: float) -> None:
        """Raise ProducerError unless the cluster answers a metadata request within `seconds`."""
        producer = self._producer
        if producer is None:
            raise ProducerError("the producer is not started")
        try:
            await asyncio.to_thread(producer.list_topics, timeout=seconds)
        except KafkaException as exc:
            raise ProducerError(f"Kafka did not answer: {exc}") from exc

    async def flush(self, seconds: float) -> int:
        """Wait up to `seconds` for what is queued; returns how many records remain."""
        if self._producer is None:
            return 0
        remaining: int = await asyncio.to_thread(self._producer.flush, seconds)
        if remaining:
            # Left after the timeout, these were answered 503 or spooled: drop them, or
            # destroying the client would wait for them.
            self._producer.purge()
        return remaining

    async def stop(self) -> None:
        """Stop polling, once the acks (and the failures of purged records) that polling
        brought are handed to the loop. A record never answered leaves its future pending: the
        request that awaits it is bounded by its own timeout."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        self._deliver(self._take_acks())
        self._producer = None

    def _poll(self) -> None:
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:  # started before the thread
            return
        while not self._stopping.is_set():
            producer.poll(_POLL_SECONDS)
            acks = self._take_acks()
            if acks:
                try:
                    loop.call_soon_threadsafe(self._deliver, acks)
                except RuntimeError:  # the loop is closed: nobody awaits these any more
                    return

    def _take_acks(self) -> list[tuple[asyncio.Future[None], Any]]:
        # Swapped, not copied, under the callbacks' lock: none appends to a list already taken.
        with self._lock:
            acks, self._acks = self._acks, []
        return acks

    @staticmethod
    def _deliver(acks: list[tuple[asyncio.Future[None], Any]]) -> None:
        for future, error in acks:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(ProducerError(_describe(error)))


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"
