"""JSON Schemas from `schemas/`, compiled once at start-up with a compiled (Rust) validator.

`jsonschema-rs` is used on the hot path: on a 3-event Caliper envelope it is about two orders of
magnitude faster than pure-Python `jsonschema` (numbers in bench/RESULTS.md). Schemas are referenced
as `<folder>/<file>#/$defs/<name>`; every file is registered under its `$id`, so `$ref`s inside a
file resolve without any network access.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
import orjson

from gateway.errors import ConfigError, FieldError

SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent / "schemas"
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
# A dead letter lists at most this many schema errors: enough to fix the sender, bounded in size.
MAX_ERRORS: Final = 20
_MAX_COLLECTED: Final = 200  # errors looked at to choose those reported


def load_documents(root: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """Every schema file under `root`, keyed by its path relative to `root` (`caliper/x.json`)."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.json")):
        doc = orjson.loads(path.read_bytes())
        if not isinstance(doc, dict) or not isinstance(doc.get("$id"), str):
            raise ConfigError(f"schema {path} has no $id")
        documents[path.relative_to(root).as_posix()] = doc
    return documents


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One compiled entry point of a schema file."""

    name: str
    validator: Any  # jsonschema_rs validator: untyped extension type

    def errors(self, instance: Any) -> tuple[FieldError, ...]:
        """The schema errors of `instance` as JSON pointers; empty when it is valid."""
        if self.validator.is_valid(instance):
            return ()
        found = {
            FieldError(path=json_pointer(error.instance_path), message=error.message)
            for error in islice(self.validator.iter_errors(instance), _MAX_COLLECTED)
        }
        # The validator's error order varies between runs: sorted, a dead letter says the same
        # thing every time (and its first error, quoted in the message, is the same one).
        return tuple(sorted(found, key=lambda e: (e.path, e.message))[:MAX_ERRORS])


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path given as keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


class SchemaSet:
    """All schemas, loaded and registered once; entry points compiled on first request for them."""

    def __init__(self, root: Path = SCHEMA_DIR) -> None:
        self._documents = load_documents(root)
        self._registry = jsonschema_rs.Registry(
            [(doc["$id"], doc) for doc in self._documents.values()]
        )
        self._compiled: dict[str, CompiledSchema] = {}

    def get(self, ref: str) -> CompiledSchema:
        """The compiled schema for `<file>#/$defs/<name>` (or a whole `<file>`)."""
        compiled = self._compiled.get(ref)
        if compiled is None:
            compiled = self._compile(ref)
            self._compiled[ref] = compiled
        return compiled

    def _compile(self, ref: str) -> CompiledSchema:
        file, _, fragment = ref.partition("#")
        doc = self._documents.get(file)
        if doc is None:
            raise ConfigError(f"no schema file {file!r} under {SCHEMA_DIR}")
        target = doc["$id"] + (f"#{fragment}" if fragment else "")
        try:
            validator = jsonschema_rs.validator_for(
                {"$schema": DRAFT, "$ref": target},
                registry=self._registry,
                validate_formats=True,
            )
        except (ValueError, jsonschema_rs.ReferencingError) as exc:
            raise ConfigError(f"schema {ref!r} does not compile: {exc}") from exc
        return CompiledSchema(name=ref, validator=validator)
