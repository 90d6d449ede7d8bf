"""Follows a Kafka topic into a local store: the reading half of a read model a component serves.

A `TopicFollower` reads every partition of a topic (no group membership: assign, never subscribe,
nothing committed to Kafka, so every gateway instance reads all of it) from the offsets its store
kept, hands the store each batch's records that `parse` keeps together with the offsets they were
read up to (a store that writes both in one transaction resumes exactly where its last batch
ended), and tells the event loop how far it got after each batch.

`caught_up` waits (bounded) until the follower has read everything before the topic's end offsets
as they are at the call: a reader that asks right after a record was acknowledged, by this
instance or another, then finds it stored.

The consumer is librdkafka's (confluent-kafka), run in a thread of its own with a store of its
own: fetching, decompressing and parsing every record of the topic costs the event loop nothing
(with aiokafka's consumer on the loop it cost about a fifth of a worker's time under load,
bench/RESULTS.md). It outlives a broker outage or a bad batch: it starts over, backing off.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from gateway.kafka.security import librdkafka_connection
from gateway.settings import KafkaSettings

_POLL_SECONDS: Final = 0.2
_OFFSETS_EVERY_SECONDS: Final = 5.0
_PARTITIONS_EVERY_SECONDS: Final = 10.0
_BATCH_RECORDS: Final = 1000
# Fetches wait for 64 KiB or 100 ms: under load, a few large fetches instead of one per produce
# request (each costs the broker and this process).
_FETCH_MIN_BYTES: Final = 64 * 1024
_FETCH_MAX_WAIT_MS: Final = 100
_KAFKA_TIMEOUT_SECONDS: Final = 5.0
_MIN_BACKOFF_SECONDS: Final = 0.5
_MAX_BACKOFF_SECONDS: Final = 5.0

log = structlog.get_logger("gateway.topic_follower")

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)


class TopicStore(Protocol[E_contra]):
    """Where a follower keeps what it read and how far: called on the follower's thread only."""

    def open(self) -> None:
        """Open (and create) the store."""

    def close(self) -> None:
        """Close it."""

    def offsets(self, topic: str) -> dict[int, int]:
        """The next offset to read, per partition, as last stored."""

    def forget_offsets(self, topic: str, partitions: Sequence[int]) -> None:
        """Drop stored offsets (of a topic that is no longer the one they were read from)."""

    def apply(self, topic: str, events: Sequence[E_contra], positions: Mapping[int, int]) -> int:
        """Store new events and the offsets they were read up to, together."""


class TopicFollower(Generic[E]):
    """Reads `topic` into the stores `store` makes, keeping the records `parse` turns into
    events. `name` prefixes its log events (`<name>_started`, `<name>_lagging`, ...); `client`
    names its Kafka clients (`<kafka.client_id>-<client>`) and its thread."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        name: str,
        client: str,
        parse: Callable[[bytes | None], E | None],
        store: Callable[[], TopicStore[E]],
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._name = name
        self._client_name = client
        self._parse = parse
        self._store = store
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        # While the consumer runs: a second client that only asks for end offsets (on the
        # reader's own handle, such a query waits behind its long-polling fetch).
        self._ends: Any = None
        self._positions: dict[int, int] = {}  # partition -> next offset consumed
        self._moved: asyncio.Future[None] | None = None  # done when the positions move next
        self._running = asyncio.Event()  # set while the consumer runs
        self._ran = False  # the current consumer got as far as consuming (its thread only)

    def start(self) -> None:
        """Start reading, in a thread of its own (from the event loop the waits will run on)."""
        self._loop = asyncio.get_running_loop()
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"{self._client_name}-consumer", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop reading; returns once the thread has closed its clients and its store."""
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def caught_up(self, wait: float) -> bool:
        """Wait (at most `wait` seconds) until the store holds every record before the topic's
        end offsets; False when it did not get there (or `wait` is 0)."""
        if wait <= 0:
            return False
        try:
            async with asyncio.timeout(wait):
                await self._running.wait()
                ends = self._ends
                if ends is None:  # stopped meanwhile
                    return False
                targets = await asyncio.to_thread(self._end_offsets, ends, wait)
                await self._positions_reach(targets)
        except TimeoutError:
            log.warning(f"{self._name}_lagging", waited_seconds=wait)
            return False
        except (KafkaException, RuntimeError) as exc:  # RuntimeError: closed meanwhile
            log.warning(f"{self._name}_end_offsets_failed", error=repr(exc))
            return False
        return True

    # --- the consumer (its own thread) ------------------------------------------------------

    def _run(self) -> None:
        store = self._store()
        store.open()
        backoff = _MIN_BACKOFF_SECONDS
        try:
            while not self._stopping.is_set():
                self._ran = False
                try:
                    self._consume(store)
                except Exception as exc:  # the store must outlive a broker outage or a bad batch
                    # A consumer that ran before failing starts over quickly; one that cannot
                    # even start backs off.
                    if self._ran:
                        backoff = _MIN_BACKOFF_SECONDS
                    log.warning(f"{self._name}_consumer_failed", error=repr(exc), retry_in=backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
        finally:
            store.close()

    def _consume(self, store: TopicStore[E]) -> None:
        # No group membership (assign, never subscribe; nothing committed to Kafka): every
        # instance reads every partition and keeps its offsets in its store.
        consumer = self._client(
            **{"fetch.min.bytes": _FETCH_MIN_BYTES, "fetch.wait.max.ms": _FETCH_MAX_WAIT_MS}
        )
        ends = self._client()
        try:
            partitions = self._partitions(consumer)
            stored = self._forget_offsets_past_the_end(
                consumer, store, partitions, store.offsets(self._topic)
            )
            consumer.assign(
                [
                    TopicPartition(self._topic, p, stored.get(p, OFFSET_BEGINNING))
                    for p in partitions
                ]
            )
            resumed = {str(partition): offset for partition, offset in stored.items()}
            log.info(f"{self._name}_started", topic=self._topic, resumed_from=resumed)
            positions = {p: stored.get(p, 0) for p in partitions}
            self._ends = ends
            self._tell_loop(self._started, dict(positions))
            self._ran = True
            persisted, persisted_at = dict(stored), time.monotonic()
            checked_at = persisted_at
            while not self._stopping.is_set():
                events = self._read_batch(consumer, positions)
                now = time.monotonic()
                if now - checked_at > _PARTITIONS_EVERY_SECONDS:
                    checked_at = now
                    added = sorted(set(self._partitions(consumer)) - set(positions))
                    if added:  # partitions added to the topic since
                        consumer.incremental_assign(
                            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in added]
                        )
                        positions.update(dict.fromkeys(added, 0))
                changed = {p: o for p, o in positions.items() if persisted.get(p) != o}
                # A topic may carry many records `parse` does not keep: batches without any only
                # move offsets, which are written at most every few seconds (re-reading a few
                # after a restart is harmless: a store keeps its events idempotent).
                if events or (changed and now - persisted_at > _OFFSETS_EVERY_SECONDS):
                    store.apply(self._topic, events, changed)
                    persisted.update(changed)
                    persisted_at = now
                self._tell_loop(self._advanced, dict(positions))
        finally:
            self._ends = None
            self._tell_loop(self._stopped)
            consumer.close()
            ends.close()

    def _client(self, **options: Any) -> Any:
        kafka = self._kafka
        name = f"{kafka.client_id}-{self._client_name}"
        return Consumer(
            {
                **librdkafka_connection(kafka, name),
                "group.id": name,  # required, never joined
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                **options,
            }
        )

    def _read_batch(self, consumer: Any, positions: dict[int, int]) -> list[E]:
        events: list[E] = []
        for message in consumer.consume(_BATCH_RECORDS, _POLL_SECONDS):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:  # librdkafka's name
                    continue
                raise KafkaException(error)
            positions[message.partition()] = message.offset() + 1
            event = self._parse(message.value())
            if event is not None:
                events.append(event)
        return events

    def _partitions(self, consumer: Any) -> list[int]:
        topics = consumer.list_topics(self._topic, timeout=_KAFKA_TIMEOUT_SECONDS).topics
        found = topics.get(self._topic)
        if found is None or found.error is not None or not found.partitions:
            raise KafkaException(f"topic {self._topic} is not there (yet)")
        return sorted(found.partitions)

    def _forget_offsets_past_the_end(
        self,
        consumer: Any,
        store: TopicStore[E],
        partitions: list[int],
        stored: dict[int, int],
    ) -> dict[int, int]:
        """Stored offsets beyond a partition's end mean the topic is not the one they were
        read from (recreated, a new cluster, the in-memory dev broker restarted): read it
        again from its beginning rather than skip what it holds (events stay idempotent)."""
        stale = []
        for partition in partitions:
            _, end = consumer.get_watermark_offsets(
                TopicPartition(self._topic, partition), timeout=_KAFKA_TIMEOUT_SECONDS
            )
            if stored.get(partition, 0) > end:
                stale.append(partition)
        if stale:
            log.warning(f"{self._name}_offsets_reset", topic=self._topic, partitions=stale)
            store.forget_offsets(self._topic, stale)
        return {p: o for p, o in stored.items() if p not in stale}

    def _tell_loop(self, call: Callable[..., Any], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(call, *args)

    def _started(self, positions: dict[int, int]) -> None:
        self._running.set()
        self._advanced(positions)

    def _advanced(self, positions: dict[int, int]) -> None:
        if positions != self._positions:
            self._positions = positions
            moved, self._moved = self._moved, None
            if moved is not None and not moved.done():
                moved.set_result(None)

    def _stopped(self) -> None:
        self._running.clear()

    async def _positions_reach(self, targets: Mapping[int, int]) -> None:
        while not all(self._positions.get(p, 0) >= e for p, e in targets.items()):
            if self._moved is None:
                self._moved = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._moved)

    def _end_offsets(self, ends: Any, seconds: float) -> dict[int, int]:
        targets = {}
        for partition in list(self._positions):
            where = TopicPartition(self._topic, partition)
            _, end = ends.get_watermark_offsets(where, timeout=seconds)
            targets[partition] = int(end)
        return targets
