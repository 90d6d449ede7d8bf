"""The log lines' timestamps: the text structlog's `TimeStamper(fmt="iso", utc=True)` wrote,
made for less (gateway/observability.py)."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import structlog

from gateway.observability import configure_logging, iso_time
from gateway.settings import LogSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def isoformat(microseconds: int) -> str:
    """What TimeStamper(fmt="iso", utc=True) writes for the instant."""
    moment = EPOCH + timedelta(microseconds=microseconds)
    return moment.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 12, 5, 1, 2, 3, 4005, tzinfo=UTC),
        datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC),  # no microseconds: isoformat leaves them out
        datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(2000, 2, 29, 12, 0, 0, 500000, tzinfo=UTC),
    ],
)
def test_iso_time_writes_what_isoformat_writes(moment: datetime) -> None:
    microseconds = (moment - EPOCH) // timedelta(microseconds=1)
    assert iso_time(microseconds) == isoformat(microseconds)


def test_iso_time_follows_the_seconds_in_any_order() -> None:
    """The text of the latest second is kept: a second before it, or a later one, is not
    written with it (threads log too, and clocks step back)."""
    start = (datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
    for offset in (0, 999_999, 1_000_000, 5, -1, -1_000_001, 86_400_000_000, 3):
        assert iso_time(start + offset) == isoformat(start + offset)


@pytest.fixture
def json_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """What JSON logging writes (configure_logging takes the stdout of the moment)."""
    written = io.BytesIO()
    # Held here: pytest's own capture puts its stdout back between setup and call, and a
    # wrapper nobody holds would close `written` when collected.
    stdout = io.TextIOWrapper(written)
    monkeypatch.setattr(sys, "stdout", stdout)
    configure_logging(LogSettings(level="info", format="json"))
    yield written
    structlog.reset_defaults()
    stdout.detach()


def test_a_json_log_line_carries_the_time_it_was_written(json_lines: io.BytesIO) -> None:
    before = datetime.now(UTC)
    structlog.get_logger("test").info("request", status=200)
    after = datetime.now(UTC)
    line = orjson.loads(json_lines.getvalue())
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert line["status"] == 200
    assert line["timestamp"].endswith("Z")
    written = datetime.fromisoformat(line["timestamp"])
    assert before - timedelta(microseconds=1) <= written <= after
