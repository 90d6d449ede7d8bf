"""An asyncio face for librdkafka's producer (confluent-kafka): send returns a future of the acks.

Why not aiokafka here (it stays for consumers and topic admin): aiokafka builds, compresses and
sends batches in Python on the event loop, about 200 us of the loop's time per 3-record request;
librdkafka does that in its own C threads, leaving the loop about 60 us (bench/RESULTS.md).

librdkafka reports acks through `poll()`. One thread polls; the acks one poll brings are handed
to the event loop in one call, not one wake-up per record. A producer's configuration follows
the gateway's `kafka` settings: acks=all, Java's murmur2 partitioner (a key lands on the same
partition as with the Java client or aiokafka), `message.timeout.ms` = the publish timeout.

Kafka's errors come in two kinds, and only one of them is worth waiting for. A record too large
for the cluster or that the broker finds invalid is refused for good: no retry cures it, so it
is reported by its position (`RecordsRefused`) once every record of the send is answered, and
the others of the send are delivered as usual. Anything else (a timeout, a leader change, a
cluster away or refusing the gateway's credentials) fails the send at once (`ProducerError`):
retrying may cure it, and the records are kept meanwhile (gateway/kafka/publisher.py).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Producer

from gateway.deadletter import RECORD_INVALID, RECORD_TOO_LARGE
from gateway.kafka.records import OutRecord
from gateway.kafka.security import librdkafka_connection
from gateway.settings import KafkaSettings

_POLL_SECONDS: Final = 0.1
# Refused for good, and because of the record itself (Java's producer does not retry these).
# A broker refuses a whole batch for one such record: the batch's other records get the same
# error, which is why the publisher sends a refused record once more on its own.
_REFUSALS: Final = {
    KafkaError.MSG_SIZE_TOO_LARGE: RECORD_TOO_LARGE,  # client or broker: over max.message.bytes
    KafkaError.RECORD_LIST_TOO_LARGE: RECORD_TOO_LARGE,
    KafkaError.INVALID_RECORD: RECORD_INVALID,  # e.g. refused by a broker-side schema
    KafkaError.INVALID_TIMESTAMP: RECORD_INVALID,
    KafkaError._BAD_MSG: RECORD_INVALID,  # a malformed message
}
# Refused for good, but because of the cluster's configuration: every record fails alike until
# an operator acts (ACLs, credentials, a missing topic), so records are kept, never discarded.
CLUSTER_REFUSALS: Final = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError._UNKNOWN_TOPIC,
    }
)


class ProducerError(Exception):
    """Kafka did not take records, for a reason retrying may cure (timed out, cluster away or
    refusing the gateway: `code` names Kafka's error, when there is one)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code

    @property
    def cluster_refused(self) -> bool:
        """The cluster refuses the gateway itself (ACLs, credentials, topics): not an outage."""
        return self.code in CLUSTER_REFUSALS


@dataclass(frozen=True, slots=True)
class Refusal:
    """One record Kafka refused for good: why (`record_too_large`, `record_invalid`), in
    Kafka's words, and whether the client refused it before any broker saw it."""

    reason: str
    detail: str
    local: bool


class RecordsRefused(Exception):
    """Raised by a send's future when Kafka refused some of its records for good (the others
    were acknowledged): `refused` maps each such record's position to its refusal."""

    def __init__(self, refused: dict[int, Refusal]) -> None:
        super().__init__(f"{len(refused)} record(s) refused for good")
        self.refused = refused


def refusal_reason(error: KafkaError) -> str | None:
    """`record_too_large` or `record_invalid` for errors that concern one record for good,
    else None."""
    return _REFUSALS.get(error.code())


@dataclass(slots=True)
class _Send:
    """What one send waits for: its records' answers, counted down by the delivery callbacks."""

    future: asyncio.Future[None]
    waiting: int
    refused: dict[int, Refusal] = field(default_factory=dict)
    over: bool = False  # answered (all acked, or failed at the first error that may pass)


class AsyncProducer:
    """One librdkafka producer, its poll thread, and futures for the acks of what is sent.

    `alone`: a producer that puts every record in a batch of its own, so that a broker's
    refusal of a batch is the refusal of that one record (for records refused in company).
    """

    def __init__(self, kafka: KafkaSettings, max_record_bytes: int, *, alone: bool = False) -> None:
        self._config: dict[str, Any] = {
            **librdkafka_connection(kafka, kafka.client_id),
            "acks": "all",
            "enable.idempotence": kafka.enable_idempotence,
            "compression.type": kafka.compression,
            "linger.ms": 0 if alone else kafka.linger_ms,
            "batch.size": min(kafka.max_batch_bytes, max_record_bytes),
            # The cluster's limit: librdkafka refuses a larger record at once (never sent, never
            # retried) and builds no batch the brokers would refuse for its size.
            "message.max.bytes": max_record_bytes,
            "message.timeout.ms": int(kafka.publish_timeout_seconds * 1000),
            "partitioner": "murmur2_random",
        }
        if alone:
            self._config["batch.num.messages"] = 1
        self._producer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # Filled by the poll thread: each answered send's future and its outcome.
        self._acks: list[tuple[asyncio.Future[None], BaseException | None]] = []
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
        """Queue records. The future completes when every record is acknowledged; fails with a
        ProducerError at the first failure that retrying may cure, or, once every record is
        answered, with RecordsRefused when some were refused for good. Raises ProducerError if
        the client cannot even queue them (its queue is full)."""
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise ProducerError("the producer is not started")
        # One future and one count for all of a request's records: a future, a callback and a
        # gather per record cost the event loop more than the records' own production.
        pending = _Send(loop.create_future(), len(records))
        delivered = self._delivered
        for index, record in enumerate(records):
            try:
                producer.produce(
                    record.topic,
                    record.value,
                    record.key,
                    headers=list(record.headers),
                    on_delivery=partial(delivered, pending, index),
                )
            except KafkaException as exc:  # refused before it was queued, e.g. too large
                error: KafkaError = exc.args[0]
                if refusal_reason(error) is not None:
                    self._answer(pending, index, error, local=True)
                    continue
                with self._lock:
                    pending.over = True
                raise ProducerError(f"Kafka did not take the record: {exc}", error.code()) from exc
            except BufferError as exc:  # the client's queue is full: the cluster is behind
                with self._lock:
                    pending.over = True
                raise ProducerError(f"Kafka did not take the record: {exc}") from exc
        if not records:
            pending.future.set_result(None)
        elif pending.over and not pending.future.done():  # every record refused at once
            self._deliver(self._take_acks())
        return pending.future

    def _delivered(self, pending: _Send, index: int, error: KafkaError | None, _: Any) -> None:
        # Runs inside poll() or flush(), which at shutdown may run at the same time in two
        # threads: the count is kept under a lock, the answer goes to the list of the moment.
        self._answer(pending, index, error, local=False)

    def _answer(self, pending: _Send, index: int, error: KafkaError | None, *, local: bool) -> None:
        with self._lock:
            if pending.over:
                return
            outcome: BaseException | None = None
            if error is not None:
                reason = refusal_reason(error)
                if reason is None:
                    outcome = ProducerError(_describe(error), error.code())
                    pending.waiting = 0
                else:
                    pending.refused[index] = Refusal(reason, _describe(error), local)
                    pending.waiting -= 1
            else:
                pending.waiting -= 1
            if pending.waiting > 0:
                return
            pending.over = True
            if outcome is None and pending.refused:
                outcome = RecordsRefused(pending.refused)
            self._acks.append((pending.future, outcome))

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

    def _take_acks(self) -> list[tuple[asyncio.Future[None], BaseException | None]]:
        # Swapped, not copied, under the callbacks' lock: none appends to a list already taken.
        with self._lock:
            acks, self._acks = self._acks, []
        return acks

    @staticmethod
    def _deliver(acks: list[tuple[asyncio.Future[None], BaseException | None]]) -> None:
        for future, outcome in acks:
            if future.done():
                continue
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)


def _describe(error: KafkaError) -> str:
    return f"{error.name()}: {error.str()}"
