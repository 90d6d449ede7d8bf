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

import asyncio
import base64
import logging
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from aiokafka.errors import KafkaError

from gateway.canonical import NormalizeContext, parse_time
from gateway.deadletter import ABSENT, DeadLetter, LetterItem
from gateway.errors import ConfigError, GatewayError, NormalizeError
from gateway.kafka.consumers import read_to_end
from gateway.kafka.publisher import Publisher
from gateway.pipeline import Pipeline, Tally, normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.settings import Settings
from gateway.tools import logs_to_stderr
from gateway.tools.devfile import tool_settings
from gateway.vendors import registry
from gateway.vendors.base import Inbound, Item, Vendor


def replay_command(
    vendor: str | None, reason: str | None, since: str | None, until: str | None, dry_run: bool
) -> int:
    """Run `gateway replay` and print what it did; 1 when Kafka cannot be read."""
    settings = tool_settings()
    logs_to_stderr(settings)
    # The client's own connection warnings would repeat what the error below says.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        filters = Filters(
            vendor=vendor,
            reason=reason,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except NormalizeError as error:
        raise ConfigError(f"--since/--until: {error.message}") from None
    try:
        tally = asyncio.run(replay(settings, filters, dry_run, progress_bar()))
    except KafkaError as error:  # as `gateway tail` says it
        print(f"gateway: Kafka at {settings.kafka.bootstrap_servers}: {error}", file=sys.stderr)
        return 1
    mode = "dry run: would publish" if dry_run else "published"
    print(
        f"{tally.read} dead letters read, {tally.matched} matched; {mode} {tally.published} "
        f"canonical records ({tally.duplicates} duplicates skipped)"
    )
    for code, count in sorted(tally.still_failing.items()):
        print(f"still failing: {count} x {code}")
    return 0


@dataclass(frozen=True)
class Filters:
    """Which dead letters to replay (None: any)."""

    vendor: str | None = None
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def match(self, letter: DeadLetter) -> bool:
        if self.vendor and letter.vendor != self.vendor:
            return False
        if self.reason and letter.reason != self.reason:
            return False
        if self.since or self.until:
            try:
                received = parse_time(letter.receivedat)
            except NormalizeError:
                return False
            if self.since and received < self.since:
                return False
            if self.until and received >= self.until:
                return False
        return True


@dataclass
class Replayed(Tally):
    """What a replay did: the pipeline's tally of what it published, and what it read."""

    read: int = 0
    matched: int = 0
    # Why letters were not replayed: their rejection's code again, `unknown_vendor`,
    # `not_replayable` (only a prefix was kept) or `not_a_dead_letter` (not a JSON object).
    still_failing: Counter[str] = field(default_factory=Counter)


def rebuild(letter: DeadLetter, vendor: Vendor, schemas: SchemaSet) -> list[Item]:
    """The items a dead letter came from (raises GatewayError if its body still cannot be split)."""
    if letter.original_body is not None:
        text = letter.original_body
        encoded = letter.original_body_encoding == "base64"
        body = base64.b64decode(text) if encoded else text.encode()
        inbound = Inbound("POST", letter.original_media_type or "", body)
        return list(split_request(vendor, inbound, schemas))
    split = letter.item or LetterItem("", None, {})
    return [
        Item(
            payload=None if letter.original is ABSENT else letter.original,
            schema=split.schema or (vendor.item_schemas or ("",))[0],
            where=letter.where or "",
            identity=split.identity,
            meta=split.meta or {},
        )
    ]


async def replay(
    settings: Settings,
    filters: Filters,
    dry_run: bool,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Replayed:
    """Replay the matching dead letters; with `dry_run`, only say what would be published."""
    vendors = registry()
    tally = Replayed()
    values = await read_to_end(settings.kafka, settings.kafka.deadletter_topic)
    tally.read = len(values)
    chosen = []
    for value in values:
        try:
            letter = DeadLetter.from_record(value)
        except ValueError:
            tally.still_failing["not_a_dead_letter"] += 1
            continue
        if filters.match(letter):
            chosen.append(letter)
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
    letter: DeadLetter,
    *,
    vendors: dict[str, Vendor],
    schemas: SchemaSet,
    pipeline: Pipeline,
    dry_run: bool,
    tally: Replayed,
) -> None:
    vendor = vendors.get(letter.vendor)
    if vendor is None:
        tally.still_failing["unknown_vendor"] += 1
        return
    if letter.original_truncated is not None or letter.topic is not None:
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
        letter.tenant, vendor.name, parse_time(letter.receivedat), letter.request_id
    )
    if dry_run:
        normalized = normalize_items(vendor, items, ctx, schemas, include_original=False)
        tally.published += len(normalized.canonical)
    else:
        normalized = await pipeline.publish_items(vendor, items, ctx, tally, dead_letter=False)
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
