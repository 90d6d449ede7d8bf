"""A Kafka record as the gateway publishes it (shared by the publisher and the spool)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# What Kafka adds around a record's key, value and headers (record and batch headers, varints):
# under 100 bytes; the rest is margin. librdkafka counts it against `message.max.bytes` too.
RECORD_FRAMING_BYTES: Final = 1024


@dataclass(frozen=True, slots=True)
class OutRecord:
    """One Kafka record to publish."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()

    @property
    def size(self) -> int:
        """Bytes it occupies (value, key and headers): what limits are counted in."""
        return (
            len(self.value) + len(self.key or b"") + sum(len(k) + len(v) for k, v in self.headers)
        )
