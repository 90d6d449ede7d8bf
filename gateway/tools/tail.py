"""`gateway tail`: the canonical or dead-letter topic, one record per line, as JSON or a table.

By default it starts like `tail`: the last `--lines` matching records (10), oldest first, taken
from the end of every partition and merged by their Kafka timestamps. `--from-beginning` starts
at the first record. Without `--follow` it stops at the end offsets it saw when it started; with
it, it keeps printing records as they arrive until interrupted.

Records hold no credentials (dead letters are redacted before they are written), but a dead
letter's `original` (and a canonical `data.original`) is the vendor's event as sent, with
learners' names and emails: they are left out unless `--with-original` asks for them.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.deadletter import DeadLetter
from gateway.kafka.consumers import stop_consumer
from gateway.kafka.security import aiokafka_connection
from gateway.settings import Settings

CANONICAL: Final = "canonical"
_FETCH_MS: Final = 500
_IDLE_FETCHES: Final = 10
DEADLETTER: Final = "deadletter"
# Fixed widths, so that lines printed while following stay aligned with the header.
_CANONICAL_COLUMNS: Final = (
    ("time", 24),
    ("type", 35),
    ("tenant", 12),
    ("vendor", 8),
    ("learner", 24),
    ("assessment", 32),
    ("id", 0),
)
_PERSONAL: Final = ("original", "original_body")
# A record of either topic: a canonical record (its JSON object) or a dead letter.
Record = dict[str, Any] | DeadLetter

_DEADLETTER_COLUMNS: Final = (
    ("time", 24),
    ("reason", 22),
    ("tenant", 12),
    ("vendor", 8),
    ("where", 20),
    ("message", 0),
)


@dataclass(frozen=True)
class Filters:
    """Which records to print: any of the vendors, tenants and types (globs); empty: all.

    A dead letter's "type" is its reason (`schema_violation`, ...)."""

    vendors: Sequence[str] = ()
    tenants: Sequence[str] = ()
    types: Sequence[str] = ()

    def match(self, record: Record) -> bool:
        vendor: Any
        tenant: Any
        if isinstance(record, DeadLetter):
            vendor, tenant, kind = record.vendor, record.tenant, record.reason
        else:
            vendor, tenant = record.get("vendor"), record.get("tenant")
            kind = str(record.get("type", record.get("reason", "")))
        if self.vendors and vendor not in self.vendors:
            return False
        if self.tenants and tenant not in self.tenants:
            return False
        return not self.types or any(fnmatch.fnmatchcase(kind, t) for t in self.types)


@dataclass(frozen=True)
class Tail:
    """What `gateway tail` was asked for."""

    topic: str
    filters: Filters = field(default_factory=Filters)
    table: bool = False
    follow: bool = False
    from_beginning: bool = False
    lines: int = 10
    with_original: bool = False


@dataclass(frozen=True, order=True)
class _Read:
    timestamp: int
    partition: int
    offset: int
    record: Record = field(compare=False)


def topic_name(settings: Settings, topic: str) -> str:
    """`canonical` and `deadletter` are the configured topics; any other name is taken as is."""
    return {
        CANONICAL: settings.kafka.canonical_topic,
        DEADLETTER: settings.kafka.deadletter_topic,
    }.get(topic, topic)


def tail_command(settings: Settings, tail: Tail) -> int:
    """Run `gateway tail`; 0 on success, 1 when the topic does not exist (without --follow)."""
    printer = Printer(sys.stdout, tail.table, tail.with_original)
    # The client's own connection warnings would repeat what the error below says.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(run_tail(settings, tail, printer))
    except KafkaError as error:
        print(f"gateway: Kafka at {settings.kafka.bootstrap_servers}: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, like any Unix filter.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def run_tail(settings: Settings, tail: Tail, printer: Printer) -> int:
    """Print what was asked for; returns the exit code."""
    consumer = AIOKafkaConsumer(
        client_id=f"{settings.kafka.client_id}-tail",
        enable_auto_commit=False,
        **aiokafka_connection(settings.kafka),
    )
    try:
        await consumer.start()
        partitions = await _partitions(consumer, tail.topic, wait=tail.follow)
        if not partitions:
            print(
                f"gateway: no topic {tail.topic} on {settings.kafka.bootstrap_servers}",
                file=sys.stderr,
            )
            return 1
        consumer.assign(partitions)
        first = await consumer.beginning_offsets(partitions)
        end = await consumer.end_offsets(partitions)
        if tail.from_beginning:
            reads, after = await _read(consumer, {tp: (first[tp], end[tp]) for tp in end}, True)
            reads = [r for r in reads if tail.filters.match(r.record)]
        else:
            reads, after = await _last(consumer, tail, first, end)
        for read in reads:
            printer.print(read.record)
        if tail.follow:
            for tp, offset in after.items():
                consumer.seek(tp, offset)
            async for message in consumer:
                record = _decode(message.value)
                if record is not None and tail.filters.match(record):
                    printer.print(record)
        return 0
    finally:
        await stop_consumer(consumer)


async def _partitions(
    consumer: AIOKafkaConsumer, topic: str, *, wait: bool
) -> list[TopicPartition]:
    """The topic's partitions; when following, waits for a topic that does not exist yet."""
    while True:
        await consumer._client.force_metadata_update()  # a topic made a moment ago
        known = consumer.partitions_for_topic(topic)
        if known or not wait:
            return [TopicPartition(topic, p) for p in sorted(known or ())]
        await asyncio.sleep(1.0)


async def _last(
    consumer: AIOKafkaConsumer,
    tail: Tail,
    first: dict[TopicPartition, int],
    end: dict[TopicPartition, int],
) -> tuple[list[_Read], dict[TopicPartition, int]]:
    """The last `tail.lines` matching records, and where each partition's end was found.

    Reads further back (doubling) until it has them or reaches the beginning, so that a filter
    does not make the answer empty."""
    after = dict(end)
    found: list[_Read] = []
    stop = dict(end)
    back = tail.lines
    while back > 0 and len(found) < tail.lines and any(stop[tp] > first[tp] for tp in stop):
        ranges = {tp: (max(first[tp], stop[tp] - back), stop[tp]) for tp in stop}
        to_end = stop == end
        reads, reached = await _read(consumer, ranges, to_end)
        if to_end:
            after = reached
        found.extend(r for r in reads if tail.filters.match(r.record))
        stop = {tp: start for tp, (start, _) in ranges.items()}
        back *= 2
    return sorted(found)[-tail.lines :] if tail.lines > 0 else [], after


async def _read(
    consumer: AIOKafkaConsumer, ranges: dict[TopicPartition, tuple[int, int]], to_end: bool
) -> tuple[list[_Read], dict[TopicPartition, int]]:
    """Records from each partition's `start` up to `stop`, oldest first, and the offset after
    the last one read per partition.

    `to_end`: `stop` is the end offset the broker reported at start. Some brokers (the embedded
    dev broker) report the start of their last record batch there, so the records after it that
    are older than this command are read too."""
    started_ms = int(time.time() * 1000)
    reads: list[_Read] = []
    after = {tp: start for tp, (start, _) in ranges.items()}
    reading = {tp for tp, (start, stop) in ranges.items() if stop > start}
    for tp in reading:
        consumer.seek(tp, after[tp])
    idle = 0
    while reading and idle < _IDLE_FETCHES:
        batch = await consumer.getmany(*reading, timeout_ms=_FETCH_MS)
        idle = 0 if batch else idle + 1
        for tp, messages in batch.items():
            stop = ranges[tp][1]
            for message in messages:
                if message.offset >= stop and (not to_end or message.timestamp > started_ms):
                    reading.discard(tp)
                    break
                after[tp] = message.offset + 1
                record = _decode(message.value)
                if record is not None:
                    reads.append(_Read(message.timestamp, tp.partition, message.offset, record))
            if not to_end and after[tp] >= stop:
                reading.discard(tp)
        if not batch:
            # Nothing more to fetch: done where the end is reached (an end that no record
            # reaches, e.g. a transaction marker, ends it after _IDLE_FETCHES empty fetches).
            reading = {tp for tp in reading if after[tp] < ranges[tp][1]}
    return sorted(reads), after


def _decode(value: bytes | None) -> Record | None:
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None  # not one of the gateway's records
    if not isinstance(record, dict):
        return None
    if "reason" in record and "specversion" not in record:  # canonical records are CloudEvents
        return DeadLetter.from_dict(record)
    return record


class Printer:
    """Writes records as JSON lines or table rows, flushing each (a follower reads them live)."""

    def __init__(self, out: TextIO, table: bool, with_original: bool) -> None:
        self._out = out
        self._table = table
        self._with_original = with_original
        self._header: str | None = None

    def print(self, record: Record) -> None:
        if isinstance(record, DeadLetter):
            letter = record if self._with_original else record.without_original()
            if self._table:
                self._letter_row(letter)
            else:
                self._out.write(orjson.dumps(letter.to_dict()).decode() + "\n")
        else:
            if not self._with_original:
                record = _without_original(record)
            if self._table:
                self._row(record)
            else:
                self._out.write(orjson.dumps(record).decode() + "\n")
        self._out.flush()

    def _row(self, record: dict[str, Any]) -> None:
        data = record.get("data")
        if not isinstance(data, dict):
            data = {}
        self._write(
            CANONICAL,
            _CANONICAL_COLUMNS,
            {
                "time": record.get("time"),
                "type": record.get("type"),
                "tenant": record.get("tenant"),
                "vendor": record.get("vendor"),
                "learner": _id(data.get("learner")),
                "assessment": _id(data.get("assessment")),
                "id": record.get("id"),
            },
        )

    def _letter_row(self, letter: DeadLetter) -> None:
        self._write(
            DEADLETTER,
            _DEADLETTER_COLUMNS,
            {
                "time": letter.receivedat,
                "reason": letter.reason,
                "tenant": letter.tenant,
                "vendor": letter.vendor,
                "where": letter.where or "(whole body)",
                "message": letter.message,
            },
        )

    def _write(
        self, kind: str, columns: tuple[tuple[str, int], ...], values: dict[str, Any]
    ) -> None:
        if self._header != kind:
            self._header = kind
            self._out.write(_line([(name.upper(), width) for name, width in columns]) + "\n")
        self._out.write(_line([(_text(values[name]), width) for name, width in columns]) + "\n")


def _without_original(record: dict[str, Any]) -> dict[str, Any]:
    """A record that is no dead letter without the vendor's event as sent (a canonical record's
    `data.original`; `original` and `original_body` of anything else)."""
    kept = {k: v for k, v in record.items() if k not in _PERSONAL}
    data = kept.get("data")
    if isinstance(data, dict) and "original" in data:
        kept["data"] = {k: v for k, v in data.items() if k != "original"}
    return kept


def _id(entity: Any) -> str:
    return str(entity.get("id", "")) if isinstance(entity, dict) else ""


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.split()) or "-"  # one record, one line


def _line(cells: list[tuple[str, int]]) -> str:
    parts = []
    for text, width in cells:
        # Ids are URLs and URNs: their end tells them apart, so the start is cut.
        cell = "…" + text[-(width - 1) :] if width and len(text) > width else text
        parts.append(cell.ljust(width) if width else cell)
    return "  ".join(parts).rstrip()
