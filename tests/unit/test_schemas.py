"""Every schema file is a valid draft 2020-12 document and compiles; canonical records conform."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from gateway.canonical import DATASCHEMA, EventType
from gateway.schemas import SCHEMA_DIR, SchemaSet, json_pointer, load_documents
from tests.support.schemas import SCHEMAS

DOCUMENTS = load_documents()


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_schema_file_is_valid_against_its_meta_schema(name: str) -> None:
    document = DOCUMENTS[name]
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)
    assert document["$id"].endswith(f"/schemas/{name}")


def test_every_vendor_has_a_schema_folder() -> None:
    folders = {path.name for path in SCHEMA_DIR.iterdir() if path.is_dir()}
    assert {"canonical", "caliper"} <= folders


def test_canonical_schema_is_the_dataschema_and_knows_the_vocabulary() -> None:
    canonical = DOCUMENTS["canonical/event.schema.json"]
    assert canonical["$id"] == DATASCHEMA
    assert canonical["properties"]["type"]["enum"] == list(EventType.ALL)


def test_errors_carry_json_pointers() -> None:
    schema = SCHEMAS.get("canonical/event.schema.json")
    errors = schema.errors({"specversion": "0.3"})
    assert any(e.path == "/specversion" for e in errors)
    assert any("required" in e.message or "is a required property" in e.message for e in errors)


def test_json_pointer_escapes() -> None:
    assert json_pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"
    assert json_pointer([]) == ""


def test_golden_records_conform_to_the_canonical_schema(schemas: SchemaSet) -> None:
    assert schemas is SCHEMAS  # one compiled set for the whole suite
    schema = schemas.get("canonical/event.schema.json")
    goldens = sorted((Path(__file__).parents[1] / "fixtures").rglob("golden/**/*.json"))
    assert goldens
    for path in goldens:
        for record in orjson.loads(path.read_bytes())["canonical"]:
            assert not schema.errors(record), (path.name, schema.errors(record))
