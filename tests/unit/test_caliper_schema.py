"""The IMS Caliper JSON Schema (`schemas/caliper/caliper.schema.json`) against real payloads.

What is checked:
- the document is a valid draft 2020-12 schema with the three entry points the gateway compiles;
- every item of every IMS positive fixture (Caliper 1.1 and 1.2, from IMS caliper-common-fixtures,
  copied under `tests/fixtures/caliper/in/ims/`) is valid, envelopes included;
- every hand-written real-payload edge case (`tests/fixtures/caliper/in/edge/`) is valid;
- every payload real emitters published (`tests/fixtures/caliper/in/emitters/`, SOURCES.md there) is
  valid, envelopes included, as its sender posts it;
- every IMS negative fixture (`ims/v1p2/commonErrorFixtures/`) is invalid against the entry point
  of its kind, with an error that points somewhere;
- `jsonschema_rs` (the gateway's hot path) and pure-Python `jsonschema` give the same verdict on
  every item, so either can validate.

Caliper 1.0 fixtures (`ims/v1p0/`, `@type`/`@id`) are out of scope: the gateway answers 422.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import jsonschema
import jsonschema_rs
import pytest
from referencing import Registry, Resource

from gateway.vendors.caliper.normalize import is_event  # the gateway's own split of data[]
from tests.support.caliper import emitter_requests

ROOT: Final = Path(__file__).resolve().parents[2]
SCHEMA_PATH: Final = ROOT / "schemas" / "caliper" / "caliper.schema.json"
FIXTURES: Final = ROOT / "tests" / "fixtures" / "caliper" / "in"
IMS: Final = FIXTURES / "ims"
EDGE: Final = FIXTURES / "edge"
NEGATIVE_DIR: Final = IMS / "v1p2" / "commonErrorFixtures"
DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
ENTRY_POINTS: Final = ("envelope", "event", "entityDescription")

# Deliberately not JSON (IMS tests the parser with it, not the schema).
NOT_JSON: Final = "caliperEntity-BadJson.json"
# The GET endpoint-configuration example, not an event or entity.
NOT_AN_ITEM: Final = "caliperEndpointConfigPayload.json"
# IMS negative fixtures that no JSON Schema can reject, mapped to the positive fixture they equal.
# This one differs from v1p2/caliperEntityScore.json only by `"maxScore": 15` instead of `15.0`;
# the JSON data model (and both engines) treat those as the same number.
INDISTINGUISHABLE: Final = {
    "caliperEntityScore-MalformedMaxScoreNotAnInt.json": IMS / "v1p2" / "caliperEntityScore.json",
}


@dataclass(frozen=True, slots=True)
class Case:
    """One instance to validate against one entry point."""

    label: str
    entry: str
    instance: Any


def _entry_for(item: Any) -> str:
    return "event" if is_event(item) else "entityDescription"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _cases_of(path: Path, label: str) -> list[Case]:
    """An envelope and each item of its `data`, or a single event / entity."""
    document = _load(path)
    if isinstance(document, dict) and "data" in document and "sensor" in document:
        cases = [Case(f"{label}::envelope", "envelope", document)]
        for index, item in enumerate(document["data"]):
            cases.append(Case(f"{label}::data/{index}", _entry_for(item), item))
        return cases
    return [Case(label, _entry_for(document), document)]


def _positive_cases() -> list[Case]:
    cases: list[Case] = []
    for version in ("v1p1", "v1p2"):
        for path in sorted((IMS / version).glob("*.json")):
            if path.name != NOT_AN_ITEM:
                cases.extend(_cases_of(path, f"{version}/{path.name}"))
    return cases


def _edge_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(EDGE.glob("*.json")):
        cases.extend(_cases_of(path, f"edge/{path.name}"))
    return cases


def _emitter_cases() -> list[Case]:
    cases: list[Case] = []
    for sent in emitter_requests():
        cases.append(Case(f"emitters/{sent.label}::envelope", "envelope", sent.envelope))
        for index, item in enumerate(sent.envelope["data"]):
            cases.append(Case(f"emitters/{sent.label}::data/{index}", _entry_for(item), item))
    return cases


def _negative_cases() -> list[Case]:
    cases: list[Case] = []
    for path in sorted(NEGATIVE_DIR.glob("*.json")):
        if path.name != NOT_JSON and path.name not in INDISTINGUISHABLE:
            cases.extend(_cases_of(path, path.name))
    return cases


def _regex_edge_cases() -> list[Case]:
    """Values on which Python `re` and Rust `regex` could disagree, or format checks could."""
    base = _load(EDGE / "ids-every-shape.json")["data"][0]
    variants: dict[str, tuple[str, Any]] = {
        "eventTime-trailing-newline": ("eventTime", "2024-05-14T09:12:00Z\n"),
        "eventTime-feb-29-non-leap": ("eventTime", "2023-02-29T09:12:00Z"),
        "eventTime-feb-29-leap-400": ("eventTime", "2000-02-29T09:12:00Z"),
        "eventTime-feb-29-century": ("eventTime", "1900-02-29T09:12:00Z"),
        "eventTime-april-31": ("eventTime", "2024-04-31T09:12:00Z"),
        "eventTime-hour-24": ("eventTime", "2024-05-14T24:00:00Z"),
        "eventTime-leap-second-utc": ("eventTime", "2016-12-31T23:59:60Z"),
        "eventTime-leap-second-offset": ("eventTime", "2016-12-31T23:59:60+01:00"),
        "eventTime-offset-no-colon": ("eventTime", "2024-05-14T09:12:00+0100"),
        "eventTime-no-zone": ("eventTime", "2024-05-14T09:12:00"),
        "eventTime-lowercase": ("eventTime", "2024-05-14t09:12:00.5z"),
        "eventTime-space": ("eventTime", "2024-05-14 09:12:00Z"),
        "id-trailing-newline": ("id", "urn:uuid:d3b07384\n"),
        "id-nbsp": ("id", "urn:uuid:d3b07384\u00a0x"),
        "action-trailing-newline": ("action", "Started\n"),
        "count-trailing-newline": ("generated.count", "1\n"),
        "count-decimal-string": ("generated.count", "1.0"),
        "count-float-integral": ("generated.count", 1.0),
        "count-negative-string": ("generated.count", "-1"),
        "duration-trailing-newline": ("generated.duration", "PT5M\n"),
        "duration-dangling-T": ("generated.duration", "P1DT"),
        "duration-bare-P": ("generated.duration", "P"),
        "duration-weeks": ("generated.duration", "P2W"),
        "duration-fraction": ("generated.duration", "PT0.5S"),
        "duration-null": ("generated.duration", None),
        "endedAtTime-null": ("generated.endedAtTime", None),
        "maxScore-exponent-string": ("object.maxScore", "1.5e2"),
        "maxScore-word": ("object.maxScore", "fifteen"),
    }
    cases: list[Case] = []
    for name, (where, value) in variants.items():
        event = copy.deepcopy(base)
        target: dict[str, Any] = event
        *parents, key = where.split(".")
        for parent in parents:
            target = target[parent]
        target[key] = value
        cases.append(Case(f"regex/{name}", "event", event))
    return cases


POSITIVE: Final = _positive_cases()
EDGE_CASES: Final = _edge_cases()
EMITTER_CASES: Final = _emitter_cases()
NEGATIVE: Final = _negative_cases()
REGEX_CASES: Final = _regex_edge_cases()


def _ids(cases: list[Case]) -> list[str]:
    return [case.label for case in cases]


@cache
def _document() -> dict[str, Any]:
    document: dict[str, Any] = _load(SCHEMA_PATH)
    return document


@cache
def _rust_validator(entry: str) -> jsonschema_rs.Validator:
    """Compiled exactly as the gateway compiles it (gateway/schemas.py)."""
    doc = _document()
    reg = jsonschema_rs.Registry([(doc["$id"], doc)])
    return jsonschema_rs.validator_for(
        {"$schema": DRAFT, "$ref": doc["$id"] + f"#/$defs/{entry}"},
        registry=reg,
        validate_formats=True,
    )


@cache
def _python_validator(entry: str) -> Any:
    doc = _document()
    registry: Registry[Any] = Registry().with_resource(doc["$id"], Resource.from_contents(doc))
    return jsonschema.Draft202012Validator(
        {"$schema": DRAFT, "$ref": doc["$id"] + f"#/$defs/{entry}"},
        registry=registry,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )


def _rust_errors(case: Case) -> list[str]:
    return [
        f"{_pointer(error.instance_path)}: {error.message}"
        for error in _rust_validator(case.entry).iter_errors(case.instance)
    ]


def _pointer(parts: list[str | int]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "(root)"


def test_schema_is_a_valid_draft_2020_12_document() -> None:
    doc = _document()
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == DRAFT
    assert doc["$id"] == "https://assessment-gateway.invalid/schemas/caliper/caliper.schema.json"
    for entry in ENTRY_POINTS:
        assert doc["$defs"][entry]["description"], f"$defs/{entry} needs a description"
    text = SCHEMA_PATH.read_text(encoding="utf-8")
    refs = [part.split('"', 1)[0] for part in text.split('"$ref": "')[1:]]
    assert refs, "the schema uses $ref"
    assert all(ref.startswith("#/$defs/") for ref in refs), "only in-document $refs"
    assert all(ref.removeprefix("#/$defs/") in doc["$defs"] for ref in refs), "no dangling $ref"


def test_fixture_sets_are_complete() -> None:
    """Guards the parametrized tests below against silently empty or shrunken fixture sets."""
    for notice in ("SOURCE.md", "NOTICE.md", "LICENSE-LGPL-3.0.txt"):
        assert (IMS / notice).is_file(), f"the LGPL copy needs {notice} beside it"
    assert len({c.label.split("::")[0] for c in POSITIVE}) == 75  # 38 v1p1 + 37 v1p2 files
    assert len({c.label.split("::")[0] for c in EDGE_CASES}) == 10
    assert len({c.label.split("::")[0] for c in EMITTER_CASES}) == 67
    assert len(NEGATIVE) + len(INDISTINGUISHABLE) + 1 == len(list(NEGATIVE_DIR.iterdir()))
    with pytest.raises(json.JSONDecodeError):
        _load(NEGATIVE_DIR / NOT_JSON)


@pytest.mark.parametrize("case", POSITIVE, ids=_ids(POSITIVE))
def test_ims_positive_fixture_is_valid(case: Case) -> None:
    errors = _rust_errors(case)
    assert not errors, f"{case.label} ({case.entry}) should be valid:\n" + "\n".join(errors)


@pytest.mark.parametrize("case", EDGE_CASES, ids=_ids(EDGE_CASES))
def test_edge_case_is_valid(case: Case) -> None:
    errors = _rust_errors(case)
    assert not errors, f"{case.label} ({case.entry}) should be valid:\n" + "\n".join(errors)


@pytest.mark.parametrize("case", EMITTER_CASES, ids=_ids(EMITTER_CASES))
def test_real_emitter_payload_is_valid(case: Case) -> None:
    errors = _rust_errors(case)
    assert not errors, f"{case.label} ({case.entry}) should be valid:\n" + "\n".join(errors)


@pytest.mark.parametrize("case", NEGATIVE, ids=_ids(NEGATIVE))
def test_ims_negative_fixture_is_invalid(case: Case) -> None:
    validator = _rust_validator(case.entry)
    assert not validator.is_valid(case.instance), f"{case.label} ({case.entry}) should be invalid"
    first = next(iter(validator.iter_errors(case.instance)))
    pointer = _pointer(first.instance_path)
    assert first.instance_path or first.message, (
        f"{case.label}: the error at {pointer} says nothing: {first.message!r}"
    )


@pytest.mark.parametrize(("name", "equal_to"), sorted(INDISTINGUISHABLE.items()))
def test_negative_fixture_indistinguishable_from_a_positive_one(name: str, equal_to: Path) -> None:
    """Documents why a negative fixture is exempt: as JSON data it *is* the positive fixture."""
    negative, positive = _load(NEGATIVE_DIR / name), _load(equal_to)
    assert negative == positive, f"{name} now differs from {equal_to.name}: test it as invalid"
    assert _rust_validator("entityDescription").is_valid(negative)


ALL_CASES: Final = [*POSITIVE, *EDGE_CASES, *EMITTER_CASES, *NEGATIVE, *REGEX_CASES]


@pytest.mark.parametrize("case", ALL_CASES, ids=_ids(ALL_CASES))
def test_rust_and_python_engines_agree(case: Case) -> None:
    rust = _rust_validator(case.entry).is_valid(case.instance)
    python = bool(_python_validator(case.entry).is_valid(case.instance))
    detail = "\n".join(_rust_errors(case)) or "(jsonschema_rs: valid)"
    assert rust == python, f"{case.label}: jsonschema_rs={rust}, jsonschema={python}\n{detail}"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("eventTime-trailing-newline", False),
        ("eventTime-feb-29-non-leap", False),
        ("eventTime-feb-29-leap-400", True),
        ("eventTime-feb-29-century", False),
        ("eventTime-april-31", False),
        ("eventTime-hour-24", False),
        ("eventTime-leap-second-utc", False),
        ("eventTime-leap-second-offset", False),
        ("eventTime-offset-no-colon", False),
        ("eventTime-no-zone", False),
        ("eventTime-lowercase", False),
        ("eventTime-space", False),
        ("id-trailing-newline", False),
        ("id-nbsp", False),
        ("action-trailing-newline", False),
        ("count-trailing-newline", False),
        ("count-decimal-string", False),
        ("count-float-integral", True),
        ("count-negative-string", True),
        ("duration-trailing-newline", False),
        ("duration-dangling-T", False),
        ("duration-bare-P", False),
        ("duration-weeks", True),
        ("duration-fraction", True),
        ("duration-null", True),
        ("endedAtTime-null", True),
        ("maxScore-exponent-string", True),
        ("maxScore-word", False),
    ],
)
def test_regex_edge_case_verdict(name: str, valid: bool) -> None:
    case = next(c for c in REGEX_CASES if c.label == f"regex/{name}")
    errors = _rust_errors(case)
    assert (not errors) is valid, f"{name}: expected valid={valid}\n" + "\n".join(errors)
