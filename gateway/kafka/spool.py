"""The store-and-forward spool: records Kafka did not acknowledge in time, kept durably on disk.

SQLite in WAL mode with `synchronous=FULL`: a row is on disk when `append` returns, so a 2xx given
after it survives a crash of the gateway (SIGKILL) or of the machine. Each worker process owns one
slot file (`spool-<n>.sqlite3`, held by an exclusive `flock` on `spool-<n>.lock` for the life of
the process); at start a worker also adopts slots no live process holds, so nothing spooled by a
dead or retired worker is left behind. A slot found or left empty (drained, or never used) is
removed, its lock file too, by the process that holds it: files do not pile up (`gateway spool
--drain`, restarts). SQLite calls run on one dedicated thread, never on the event loop.

Beside the slots, `quarantine.sqlite3` keeps the rare record that Kafka refuses for good and that
not even a dead letter can replace (gateway/kafka/publisher.py): out of the spool, so that it never
blocks what comes after it, and never retried. `gateway spool` lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import orjson

from gateway.errors import SpoolFull
from gateway.kafka.records import OutRecord

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    spooled_at REAL NOT NULL
)
"""
_INSERT: Final = (
    "INSERT INTO records (topic, key, value, headers, spooled_at) VALUES (?, ?, ?, ?, ?)"
)
_MAX_SLOTS: Final = 256
QUARANTINE_FILE: Final = "quarantine.sqlite3"
_QUARANTINE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    quarantined_at REAL NOT NULL
)
"""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Spooled:
    """A record read back from the spool, with its position."""

    seq: int
    record: OutRecord
    spooled_at: float
    slot: Path  # the slot file it was read from


class _Slot:
    """One SQLite spool file and the lock that makes it this process's."""

    def __init__(self, path: Path, lock: IO[bytes]) -> None:
        self.path = path
        self.lock = lock
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(_SCHEMA)

    def close(self) -> None:
        self.db.close()
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()

    def discard(self) -> None:
        """Close the slot and remove its files: it holds no record. The lock is released only
        once they are gone; a process that opened the lock file meanwhile sees, once it has the
        lock, that the file is no longer there, and opens the slot anew (`_try_lock`)."""
        self.db.close()
        for path in (
            self.path,
            self.path.with_name(self.path.name + "-wal"),
            self.path.with_name(self.path.name + "-shm"),
            Path(self.lock.name),
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        fcntl.flock(self.lock, fcntl.LOCK_UN)
        self.lock.close()


def _try_lock(directory: Path, index: int) -> _Slot | None:
    lock_path = directory / f"spool-{index}.lock"
    while True:
        lock = lock_path.open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            return None
        # The lock is the file's, not the name's: a slot discarded between our open and our
        # flock has no file under that name any more (or a new one), so its lock means nothing.
        if _same_file(lock, lock_path):
            return _Slot(directory / f"spool-{index}.sqlite3", lock)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _same_file(opened: IO[bytes], path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(opened.fileno())
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


class Spool:
    """This process's spool slot plus any orphaned slots it adopted, drained oldest first."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._directory = directory
        self._max_bytes = max_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._own: _Slot | None = None
        self._orphans: list[_Slot] = []
        self._bytes = 0
        self.depth = 0
        self.oldest: float | None = None
        self._refusing = False

    @property
    def full(self) -> bool:
        """True once records were refused for lack of room, until some are forwarded."""
        return self._refusing

    async def open(self) -> None:
        """Take a free slot and adopt every unheld slot that still holds records."""
        await self._run(self._open)

    async def close(self) -> None:
        """Release the slots (their records stay on disk for the next start)."""
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def append(self, records: list[OutRecord]) -> None:
        """Store records durably; raises SpoolFull when they do not fit."""
        await self._run(self._append, records)

    async def peek(self, limit: int) -> list[Spooled]:
        """The oldest records, adopted slots first (they are older than anything of ours)."""
        return await self._run(self._peek, limit)

    async def remove(self, spooled: list[Spooled]) -> None:
        """Forget records Kafka has acknowledged."""
        await self._run(self._remove, spooled)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    def _open(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        # The slots that exist, and one more: a new slot is made only when all are held.
        existing = {
            int(number)
            for path in self._directory.glob("spool-*.lock")
            if (number := path.stem.removeprefix("spool-")).isdigit()
        }
        fresh = next(i for i in range(_MAX_SLOTS + 1) if i not in existing)
        for index in sorted(existing | {fresh}):
            if index >= _MAX_SLOTS:
                break
            if index == fresh and self._own is not None:
                continue  # a slot is made only when all are held: made for nothing, it would stay
            slot = _try_lock(self._directory, index)
            if slot is None:
                continue
            if self._own is None:
                self._own = slot
            elif self._count(slot)[0]:
                self._orphans.append(slot)
            else:
                slot.discard()
        if self._own is None:
            raise RuntimeError(f"no free spool slot in {self._directory}")
        self._refresh()

    def _close(self) -> None:
        for slot in [*self._orphans, *([self._own] if self._own else [])]:
            if self._count(slot)[0]:
                slot.close()  # its records wait for the next start (or `gateway spool --drain`)
            else:
                slot.discard()
        self._orphans, self._own = [], None

    def _slots(self) -> list[_Slot]:
        return [*self._orphans, *([self._own] if self._own else [])]

    @staticmethod
    def _count(slot: _Slot) -> tuple[int, int, float | None]:
        row = slot.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(value) + LENGTH(headers)), 0), MIN(spooled_at) "
            "FROM records"
        ).fetchone()
        return int(row[0]), int(row[1]), row[2]

    def _refresh(self) -> None:
        counts = [self._count(slot) for slot in self._slots()]
        self.depth = sum(c[0] for c in counts)
        self._bytes = sum(c[1] for c in counts)
        oldest = [c[2] for c in counts if c[2] is not None]
        self.oldest = min(oldest) if oldest else None

    def _append(self, records: list[OutRecord]) -> None:
        assert self._own is not None  # noqa: S101  # opened before use
        size = sum(r.size for r in records)
        if self._bytes + size > self._max_bytes:
            self._refusing = True
            raise SpoolFull(
                f"the local spool is full ({self._bytes} of {self._max_bytes} bytes) while Kafka "
                "is unavailable"
            )
        now = time.time()
        rows = [(r.topic, r.key, r.value, _encode_headers(r.headers), now) for r in records]
        with self._own.db:  # one transaction: all of a request's records, or none
            self._own.db.execute("BEGIN IMMEDIATE")
            self._own.db.executemany(_INSERT, rows)
        self.depth += len(records)
        self._bytes += size
        if self.oldest is None:
            self.oldest = now

    def _peek(self, limit: int) -> list[Spooled]:
        for slot in self._slots():
            rows = slot.db.execute(
                "SELECT seq, topic, key, value, headers, spooled_at FROM records "
                "ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            if rows:
                return [
                    Spooled(
                        seq, OutRecord(topic, key, value, _decode_headers(headers)), at, slot.path
                    )
                    for seq, topic, key, value, headers, at in rows
                ]
        return []

    def _remove(self, spooled: list[Spooled]) -> None:
        if not spooled:
            return
        slot = next(s for s in self._slots() if s.path == spooled[0].slot)
        seqs = [(item.seq,) for item in spooled]
        with slot.db:
            slot.db.execute("BEGIN IMMEDIATE")
            slot.db.executemany("DELETE FROM records WHERE seq = ?", seqs)
        self._retire_empty_orphans()
        self._refresh()
        self._refusing = False

    def _retire_empty_orphans(self) -> None:
        for slot in list(self._orphans):
            if not self._count(slot)[0]:
                self._orphans.remove(slot)
                slot.discard()


def _encode_headers(headers: tuple[tuple[str, bytes], ...]) -> bytes:
    # Latin-1 maps every byte to one code point, so header bytes survive JSON unchanged.
    return orjson.dumps([[key, value.decode("latin-1")] for key, value in headers])


def _decode_headers(stored: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple((key, value.encode("latin-1")) for key, value in orjson.loads(stored))


@dataclass(frozen=True, slots=True)
class SlotInfo:
    """What `gateway spool` shows of one spool file."""

    path: Path
    records: int
    bytes: int
    oldest: float | None
    held: bool  # a live gateway process owns it (and drains it)


def inspect_spool(directory: Path) -> list[SlotInfo]:
    """Every spool file under `directory`, read without disturbing the process that holds it."""
    found: list[SlotInfo] = []
    for path in sorted(directory.glob("spool-*.sqlite3")):
        try:
            # Opened, never created: a lock file made here would outlive a discarded slot.
            with path.with_suffix(".lock").open("rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held = True
                else:
                    held = False
                    fcntl.flock(lock, fcntl.LOCK_UN)
        except FileNotFoundError:
            held = False  # no lock file: no process holds it
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.OperationalError:
            continue  # discarded meanwhile
        try:
            count, size, oldest = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(value) + LENGTH(headers)), 0), "
                "MIN(spooled_at) FROM records"
            ).fetchone()
        except sqlite3.OperationalError:  # created but never written
            count, size, oldest = 0, 0, None
        finally:
            db.close()
        found.append(SlotInfo(path, int(count), int(size), oldest, held))
    return found


class Quarantine:
    """Records Kafka refused for good that no dead letter could replace, kept durably on disk.

    Written rarely (a record must be refused, and its dead letter too), by any worker: each write
    opens the file, adds one row in one transaction and closes it, on a thread of its own.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / QUARANTINE_FILE

    async def add(self, record: OutRecord, reason: str, detail: str) -> None:
        """Keep `record` with why Kafka refused it (`reason` code, Kafka's own words)."""
        await asyncio.to_thread(self._add, record, reason, detail)

    def _add(self, record: OutRecord, reason: str, detail: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_QUARANTINE_SCHEMA)
            row = (
                record.topic,
                record.key,
                record.value,
                _encode_headers(record.headers),
                reason,
                detail,
                time.time(),
            )
            with db:
                db.execute(
                    "INSERT INTO records (topic, key, value, headers, reason, detail, "
                    "quarantined_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
        finally:
            db.close()


@dataclass(frozen=True, slots=True)
class QuarantineInfo:
    """What `gateway spool` shows of the quarantine file."""

    path: Path
    records: int
    bytes: int
    reasons: dict[str, int]  # reason code -> records


def inspect_quarantine(directory: Path) -> QuarantineInfo | None:
    """The quarantine file under `directory`, or None when nothing was ever quarantined."""
    path = directory / QUARANTINE_FILE
    if not path.is_file():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT reason, COUNT(*), COALESCE(SUM(LENGTH(value)), 0) FROM records GROUP BY reason"
        ).fetchall()
    except sqlite3.OperationalError:  # created but never written
        rows = []
    finally:
        db.close()
    reasons = {str(reason): int(count) for reason, count, _ in rows}
    return QuarantineInfo(path, sum(reasons.values()), sum(int(r[2]) for r in rows), reasons)
