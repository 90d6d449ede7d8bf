"""`gateway schema`: the canonical record's JSON Schema (or the dead letter's), as shipped."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

from gateway.errors import ConfigError
from gateway.schemas import SCHEMA_DIR

CANONICAL_SCHEMA: Final = SCHEMA_DIR / "canonical" / "event.schema.json"
DEADLETTER_SCHEMA: Final = SCHEMA_DIR / "canonical" / "deadletter.schema.json"


def schema_command(deadletter: bool, write: str | None) -> int:
    """Print the schema file byte for byte, or copy it to `write`."""
    source = DEADLETTER_SCHEMA if deadletter else CANONICAL_SCHEMA
    content = source.read_bytes()
    if write is None:
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(write).write_bytes(content)
    except OSError as error:
        raise ConfigError(f"cannot write {write}: {error.strerror}") from None
    print(f"wrote {source.name} to {write}", file=sys.stderr)
    return 0
