"""JSON Schemas from `schemas/`, compiled once at start-up with a compiled (Rust) validator.

`jsonschema-rs` is used on the hot path: on a 3-event envelope it is about two orders of
magnitude faster than pure-Python `jsonschema` (numbers in bench/RESULTS.md). Schemas are referenced
as `<folder>/<file>#/$defs/<name>`; every file is registered under its `$id`, so `$ref`s inside a
file resolve without any network access. A vendor whose schemas are in a folder of its own
(`Vendor.schema_dir`, a third-party package's) has that folder read as `schemas/<its name>/`.

Errors are said for the sender who reads them (in an answer, a dead letter, `gateway validate`):
a value that fails a pattern says what was expected (the `title` of the schema that holds the
pattern, or its `format`), never the regular expression; and an `anyOf` that only one branch
could have meant (the others expect another JSON type) gives that branch's errors, at the place
they are, rather than "not valid under any of the schemas".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Final

import jsonschema_rs
import orjson

from gateway.errors import ConfigError, FieldError
from gateway.vendors import registry

SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent / "schemas"
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
# A dead letter lists at most this many schema errors: enough to fix the sender, bounded in size.
MAX_ERRORS: Final = 20
_MAX_COLLECTED: Final = 200  # errors looked at to choose those reported
# What a value that fails a `format` was expected to be, in words.
FORMATS: Final = {"date-time": "an RFC 3339 date-time"}


def load_documents(root: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    """Every schema file under `root`, keyed by its path relative to `root` (`<folder>/x.json`)."""
    documents: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.json")):
        doc = orjson.loads(path.read_bytes())
        if not isinstance(doc, dict) or not isinstance(doc.get("$id"), str):
            raise ConfigError(f"schema {path} has no $id")
        documents[path.relative_to(root).as_posix()] = doc
    return documents


def expected_patterns(documents: Iterable[Any]) -> dict[str, str]:
    """What each pattern of the schemas stands for, in words: the `title` of the schema that
    holds it, else what its `format` names (FORMATS). Patterns that stand for nothing named are
    left out (their errors keep the validator's message)."""
    found: dict[str, str] = {}
    stack = list(documents)
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            pattern = node.get("pattern")
            expected = node.get("title") or FORMATS.get(node.get("format", ""))
            if isinstance(pattern, str) and isinstance(expected, str):
                found[pattern] = expected
            stack.extend(node.values())
    return found


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """One compiled entry point of a schema file."""

    name: str
    validator: Any  # jsonschema_rs validator: untyped extension type
    expected: dict[str, str] = field(default_factory=dict)  # see `expected_patterns`

    def errors(self, instance: Any) -> tuple[FieldError, ...]:
        """The schema errors of `instance` as JSON pointers; empty when it is valid."""
        if self.validator.is_valid(instance):
            return ()
        found = {
            explained
            for error in islice(self.validator.iter_errors(instance), _MAX_COLLECTED)
            for explained in self._explain(error)
        }
        # The validator's error order varies between runs: sorted, a dead letter says the same
        # thing every time (and its first error, quoted in the message, is the same one).
        return tuple(sorted(found, key=lambda e: (e.path, e.message))[:MAX_ERRORS])

    def _explain(self, error: Any) -> list[FieldError]:
        """One validator error as the sender should read it (see the module's docstring)."""
        return [found for found, _ in self._said(error)]

    def _said(self, error: Any) -> list[tuple[FieldError, bool]]:
        """The errors `error` stands for, each with whether it says what was expected."""
        kind = error.kind
        path = json_pointer(error.instance_path)
        if isinstance(kind, _ALTERNATIVES):
            # Branches that fail only because the value is of another JSON type were not meant.
            meant = [branch for branch in kind.context if not _only_type_errors(branch, path)]
            if len(meant) == 1:
                inner = [said for e in meant[0] for said in self._said(e)]
                # Deeper errors only where they say what was expected: a branch's first
                # failing member is not always the one that tells the sender what is wrong.
                if all(named or found.path == path for found, named in inner):
                    return inner
        expected = None
        if isinstance(kind, jsonschema_rs.ValidationErrorKind.Pattern):
            expected = self.expected.get(kind.pattern)
        elif isinstance(kind, jsonschema_rs.ValidationErrorKind.Format):
            expected = FORMATS.get(kind.format)
        if expected is None:
            return [(FieldError(path=path, message=error.message), False)]
        value = orjson.dumps(error.instance).decode()
        return [(FieldError(path=path, message=f"{value} is not {expected}"), True)]


_ALTERNATIVES: Final = (
    jsonschema_rs.ValidationErrorKind.AnyOf,
    jsonschema_rs.ValidationErrorKind.OneOfNotValid,
)


def _only_type_errors(branch: Iterable[Any], path: str) -> bool:
    return all(
        isinstance(e.kind, jsonschema_rs.ValidationErrorKind.Type)
        and json_pointer(e.instance_path) == path
        for e in branch
    )


def json_pointer(parts: Iterable[str | int]) -> str:
    """RFC 6901 pointer for a path given as keys and indexes."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def vendor_folders() -> dict[str, Path]:
    """The schema folders the registered vendors keep elsewhere than `schemas/`, by name."""
    return {
        name: vendor.schema_dir
        for name, vendor in registry().items()
        if vendor.schema_dir is not None
    }


class SchemaSet:
    """All schemas, loaded and registered once; entry points compiled on first request for them.

    `folders`: more folders, each read as `<name>/` of `root` (default: `vendor_folders()`)."""

    def __init__(self, root: Path = SCHEMA_DIR, folders: Mapping[str, Path] | None = None) -> None:
        self._documents = load_documents(root)
        for name, folder in (vendor_folders() if folders is None else folders).items():
            for file, document in load_documents(folder).items():
                self._documents[f"{name}/{file}"] = document
        self._registry = jsonschema_rs.Registry(
            [(doc["$id"], doc) for doc in self._documents.values()]
        )
        self._expected = expected_patterns(self._documents.values())
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
        return CompiledSchema(name=ref, validator=validator, expected=self._expected)
