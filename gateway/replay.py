"""`gateway replay`: publish dead letters again once what rejected them is fixed.

Reads the dead-letter topic from its beginning up to its end at start (letters that arrive
meanwhile may wait for the next replay), keeps the letters that match the filters, rebuilds
each one's items (the event with the schema, identity and facts it was split with, or the whole
body of a request that could not be split) and runs them through the same validate, normalize,
dedupe and publish steps as a live request, under the letter's tenant. Letters that still fail
are reported and stay where they are (never dead-lettered twice). Canonical ids are
deterministic: replaying twice publishes the same records again, with the same ids, which
consumers deduplicate (docs/delivery.md).
"""

from __future__ import annotations

import base64
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from gateway.canonical import NormalizeContext, parse_time
from gateway.consumers import stop_consumer
from gateway.errors import GatewayError, NormalizeError
from gateway.kafka_security import aiokafka_connection
from gateway.pipeline import Pipeline, RequestStats, normalize_items, split_request
from gateway.publisher import Publisher
from gateway.schemas import SchemaSet
from gateway.settings import Settings
from gateway.vendors import registry
from gateway.vendors.base import Inbound, Item, Vendor


@dataclass(frozen=True)
class Filters:
    """Which dead letters to replay (None: any)."""

    vendor: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def match(self, letter: dict[str, Any]) -> bool:
        if self.vendor and letter.get("vendor") != self.vendor:
            return False
        if self.reason and letter.get("reason") != self.reason:
            return False
        if self.since or self.until:
            try:
                received = parse_time(letter.get("receivedat"))
            except NormalizeError:
                return False
            if self.since and received < self.since:
                return False
            if self.until and received >= self.until:
                return False
        return True


@dataclass
class Tally:
    """What a replay did."""

    read: int = 0
    matched: int = 0
    published: int = 0
    duplicates: int = 0
    still_failing: Counter[str] = field(default_factory=Counter)


def rebuild(letter: dict[str, Any], vendor: Vendor, schemas: SchemaSet) -> list[Item]:
    """The items a dead letter came from (raises GatewayError if its body still cannot be split)."""
    if "original_body" in letter:
        text = letter["original_body"]
        body = (
            base64.b64decode(text)
            if letter.get("original_body_encoding") == "base64"
            else text.encode()
        )
        inbound = Inbound("POST", letter.get("original_media_type", ""), body)
        return list(split_request(vendor, inbound, schemas))
    split = letter.get("item") or {}
    return [
        Item(
            payload=letter.get("original"),
            schema=split.get("schema") or (vendor.item_schemas or ("",))[0],
            where=letter.get("where", ""),
            identity=split.get("identity"),
            meta=split.get("meta") or {},
        )
    ]


async def read_dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every letter now in the dead-letter topic, oldest first per partition."""
    topic = settings.kafka.deadletter_topic
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_connection(settings.kafka))
    try:
        await consumer.start()  # in the try: a consumer that could not connect is closed too
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return []
        consumer.assign(partitions)
        end = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        letters: list[dict[str, Any]] = []
        remaining = {tp for tp in partitions if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                letters.extend(orjson.loads(message.value) for message in messages)
                if messages and messages[-1].offset >= end[tp] - 1:
                    remaining.discard(tp)
        # Past the end offsets, whatever one more short poll returns is read too: some brokers
        # (the embedded dev broker) report the end of a partition one batch short.
        while batch := await consumer.getmany(*partitions, timeout_ms=300):
            for messages in batch.values():
                letters.extend(orjson.loads(message.value) for message in messages)
        return letters
    finally:
        await stop_consumer(consumer)


async def replay(
    settings: Settings,
    filters: Filters,
    dry_run: bool,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Tally:
    """Replay the matching dead letters; with `dry_run`, only say what would be published."""
    vendors = registry()
    tally = Tally()
    letters = await read_dead_letters(settings)
    tally.read = len(letters)
    chosen = [letter for letter in letters if filters.match(letter)]
    tally.matched = len(chosen)
    publisher = Publisher(settings.kafka, settings.server)  # direct: replay is not a sender
    # No sender authenticates here: the tenant of each letter is the one it was stamped with.
    pipeline = Pipeline.for_settings(settings, publisher)
    schemas = pipeline.schemas
    if not dry_run:
        await publisher.start()
    try:
        for done, letter in enumerate(chosen, 1):
            await _replay_one(
                letter,
                vendors=vendors,
                schemas=schemas,
                pipeline=pipeline,
                dry_run=dry_run,
                tally=tally,
            )
            progress(done, len(chosen))
    finally:
        if not dry_run:
            await publisher.stop()
    return tally


async def _replay_one(
    letter: dict[str, Any],
    *,
    vendors: dict[str, Vendor],
    schemas: SchemaSet,
    pipeline: Pipeline,
    dry_run: bool,
    tally: Tally,
) -> None:
    vendor = vendors.get(letter.get("vendor", ""))
    if vendor is None:
        tally.still_failing["unknown_vendor"] += 1
        return
    if "original_truncated" in letter or "topic" in letter:
        # Only a prefix of the event was kept, or the letter holds a record Kafka refused (not
        # the vendor's event): nothing to rebuild the event from.
        tally.still_failing["not_replayable"] += 1
        return
    try:
        items = rebuild(letter, vendor, schemas)
    except GatewayError as error:
        tally.still_failing[error.code] += 1
        return
    ctx = NormalizeContext(
        letter["tenant"], vendor.name, parse_time(letter["receivedat"]), letter.get("request_id")
    )
    if dry_run:
        normalized = normalize_items(vendor, items, ctx, schemas, include_original=False)
        tally.published += len(normalized.canonical)
    else:
        stats = RequestStats()
        normalized = await pipeline.publish_items(vendor, items, ctx, stats, dead_letter=False)
        tally.published += stats.accepted
        tally.duplicates += stats.duplicates
    for _, rejection in normalized.rejected:
        tally.still_failing[rejection.code] += 1


def progress_bar(stream: TextIO = sys.stderr) -> Callable[[int, int], None]:
    """A one-line progress bar when `stream` is a terminal; elsewhere (a pipe, a log file, CI)
    nothing, rather than a line of carriage returns: the command's summary says what was done."""
    if not stream.isatty():
        return lambda done, total: None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            stream.write("\n")
        stream.flush()

    return show
