"""The suite's one `SchemaSet`: compiling every schema is the slow part of building one, so the
tests share this instance (the root conftest's `schemas` fixture hands out the same object)."""

from __future__ import annotations

from typing import Final

from gateway.schemas import SchemaSet

SCHEMAS: Final = SchemaSet()
CANONICAL: Final = SCHEMAS.get("canonical/event.schema.json")
DEADLETTER: Final = SCHEMAS.get("canonical/deadletter.schema.json")
