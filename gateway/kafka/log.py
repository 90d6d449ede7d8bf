"""librdkafka's own log lines (confluent-kafka's producer and consumer) in the gateway's log."""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import structlog

log = structlog.get_logger("gateway.kafka")

# librdkafka retries a refused connection every few hundred ms: the same line is logged again
# only after this long (the gateway's own broker_lost already says that Kafka is away).
_REPEAT_SECONDS: Final = 60.0


class ClientLog:
    """librdkafka's warnings and errors (served by poll, with Python's logging levels) as
    structured gateway log lines, each distinct line at most once a minute."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def log(self, level: int, message: str, *args: Any) -> None:
        if level < logging.WARNING:
            return
        text = message % args if args else message
        now = time.monotonic()
        if now - self._last.get(text, -_REPEAT_SECONDS) < _REPEAT_SECONDS:
            return
        if len(self._last) > 1000:  # bounded: lines carry broker names, not request data
            self._last.clear()
        self._last[text] = now
        log.warning(
            "kafka_client_log", client_level=logging.getLevelName(level).lower(), message=text
        )
