"""Property-based tests: whatever a sender posts, every vendor's decoder either takes it or
refuses it with a GatewayError (a clear 4xx), and every normalizer turns what was taken into
canonical records or rejections (dead letters): never any other exception, which would be a 500.

Inputs are arbitrary bytes, arbitrary JSON, arbitrary forms, and the vendors' own fixtures with
one part replaced by an arbitrary value (which reaches deep into the normalizers, where random
JSON would stop at the schema).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.canonical import NormalizeContext
from gateway.errors import GatewayError, UnsafePayload
from gateway.limits import MAX_JSON_DEPTH, InvalidJson, loads_json
from gateway.pipeline import normalize_items, split_request
from gateway.vendors import registry
from gateway.vendors.base import Inbound, Vendor
from tests.support.caliper import as_envelope, positive_fixtures
from tests.support.schemas import SCHEMAS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
VENDORS = registry()
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MEDIA_TYPES = (JSON, FORM, "", "text/plain", "application/cloudevents+json")
PATH_PARAMS = {"course_id": "101", "quiz_id": "202", "id": "303"}
CTX = NormalizeContext("tenant", "vendor", datetime(2026, 1, 1, tzinfo=UTC), "request")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "2026-01-01T00:00:00Z", "not a time", "urn:uuid:x", "1e999"]),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def seeds() -> dict[str, list[tuple[str, Any]]]:
    """Real bodies of each vendor (media type, JSON value; Pearson: its form fields)."""
    caliper = [(JSON, as_envelope(path)[0]) for path in positive_fixtures()]
    canvas = []
    for path in sorted((FIXTURES / "canvas" / "in").glob("*.json")):
        request = orjson.loads(path.read_bytes())
        if request["content_type"] == JSON and isinstance(request["body"], dict):
            canvas.append((JSON, request["body"]))
    inspera = [
        (JSON, orjson.loads(path.read_bytes()))
        for path in sorted((FIXTURES / "inspera" / "in" / "webhooks").glob("*.json"))
    ]
    pearson = [
        (FORM, orjson.loads(path.read_bytes())["fields"])
        for path in sorted((FIXTURES / "pearson" / "in").glob("*.json"))
    ]
    xapi = [
        (JSON, orjson.loads(path.read_bytes()))
        for path in sorted((FIXTURES / "xapi" / "in").glob("*.json"))
    ]
    return {
        "caliper": caliper,
        "canvas": canvas,
        "inspera": inspera,
        "pearson": pearson,
        "xapi": xapi,
    }


SEEDS = seeds()


def body_of(media_type: str, value: Any) -> bytes:
    """A JSON value as a body; Pearson's fields as its form (PAYLOAD as JSON text)."""
    if media_type != FORM:
        return orjson.dumps(value)
    pairs = value.items() if isinstance(value, dict) else [("PAYLOAD", value)]
    fields = {str(k): v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in pairs}
    return urlencode(fields).encode()


def run(vendor: Vendor, media_type: str, body: bytes) -> None:
    """The pure pipeline; fails the test on any exception but the documented ones."""
    inbound = Inbound("POST", media_type, body, path_params=PATH_PARAMS)
    refused: GatewayError | None
    try:
        items = split_request(vendor, inbound, SCHEMAS)
    except GatewayError as error:
        refused = error
    else:
        refused = None
    if refused is not None:
        assert 400 <= refused.status < 500, refused  # a clear 4xx, never a 500
        return
    normalized = normalize_items(vendor, items, CTX, SCHEMAS, include_original=True)
    assert len(normalized.rejected) <= len(items)
    for record in normalized.canonical:
        orjson.dumps(record)  # what is published must serialize


@pytest.fixture(scope="module", autouse=True)
def _have_seeds() -> None:
    assert all(SEEDS.values()), "every vendor needs fixtures to mutate"


@pytest.mark.parametrize("name", sorted(VENDORS))
@SETTINGS
@given(media_type=st.sampled_from(MEDIA_TYPES), body=st.binary(max_size=300))
def test_arbitrary_bytes(name: str, media_type: str, body: bytes) -> None:
    run(VENDORS[name], media_type, body)


@pytest.mark.parametrize("name", sorted(VENDORS))
@SETTINGS
@given(media_type=st.sampled_from(MEDIA_TYPES), value=JSON_VALUES)
def test_arbitrary_json(name: str, media_type: str, value: Any) -> None:
    run(VENDORS[name], media_type, orjson.dumps(value))


FORM_KEYS = st.text(alphabet="ab[]0_-=&%+ ", max_size=12) | st.sampled_from(
    [
        "quiz_submission_events[][event_type]",
        "quiz_submission_events[][event_data][answer]",
        "quiz_submission_events[0][client_timestamp]",
        "quiz_submission_events[]",
        "MESSAGE-ID",
        "MESSAGE-TYPE",
        "PAYLOAD",
        "PAYLOAD-CONTENT-TYPE",
        "DELIVERY-ATTEMPT-ID",
    ]
)


@pytest.mark.parametrize("name", sorted(VENDORS))
@SETTINGS
@given(fields=st.lists(st.tuples(FORM_KEYS, st.text(max_size=20)), max_size=12))
def test_arbitrary_forms(name: str, fields: list[tuple[str, str]]) -> None:
    run(VENDORS[name], FORM, urlencode(fields).encode())


@st.composite
def mutated(draw: st.DrawFn, name: str) -> tuple[str, Any]:
    """A fixture of `name` with one node replaced by an arbitrary value, or removed."""
    media_type, seed = draw(st.sampled_from(SEEDS[name]))
    holder = {"root": orjson.loads(orjson.dumps(seed))}  # a copy to change
    parent: Any = holder
    key: Any = "root"
    if name == "pearson" and isinstance(holder["root"].get("PAYLOAD"), dict | list):
        # Pearson's event travels as JSON text inside the form: mutate the event itself.
        parent, key = holder["root"], "PAYLOAD"
    elif name == "caliper" and holder["root"].get("data") and draw(st.integers(0, 3)):
        # Most of a Caliper envelope is its events: start inside one, mostly.
        parent = holder["root"]["data"]
        key = draw(st.integers(min_value=0, max_value=len(parent) - 1))
    # Walk down a few random steps, then replace (or drop) what is there.
    for _ in range(draw(st.integers(min_value=0, max_value=8) | st.integers(3, 8))):
        node = parent[key]
        if isinstance(node, dict) and node:
            parent, key = node, draw(st.sampled_from(sorted(node)))
        elif isinstance(node, list) and node:
            parent, key = node, draw(st.integers(min_value=0, max_value=len(node) - 1))
        else:
            break
    if isinstance(parent, dict) and parent is not holder and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(JSON_VALUES)
    return media_type, holder["root"]


@pytest.mark.parametrize("name", sorted(VENDORS))
@SETTINGS
@given(data=st.data())
def test_mutated_fixtures(name: str, data: st.DataObject) -> None:
    media_type, document = data.draw(mutated(name))
    run(VENDORS[name], media_type, body_of(media_type, document))


@SETTINGS
@given(value=JSON_VALUES)
def test_json_within_limits_reads_as_orjson(value: Any) -> None:
    """The limits change nothing for JSON within them (the shallow values generated here)."""
    text = orjson.dumps(value)
    assert loads_json(text) == orjson.loads(text)


@SETTINGS
@given(
    body=st.binary(max_size=200)
    | JSON_VALUES.map(orjson.dumps)
    | st.lists(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"a"', b":", b",", b"1", b"\\", b" "])
    ).map(b"".join)
)
def test_loads_json_raises_nothing_but_its_two_errors(body: bytes) -> None:
    try:
        value = loads_json(body)
    except (InvalidJson, UnsafePayload):
        return
    assert value == orjson.loads(body)  # what it takes, it reads as orjson does


@SETTINGS
@given(key=st.text(max_size=8), first=JSON_VALUES, second=JSON_VALUES, depth=st.integers(0, 5))
def test_repeated_keys_are_refused_at_any_depth(
    key: str, first: Any, second: Any, depth: int
) -> None:
    member = orjson.dumps(key).decode()
    inner = f"{{{member}:{orjson.dumps(first).decode()},{member}:{orjson.dumps(second).decode()}}}"
    text = '{"a":[' * depth + inner + "]}" * depth
    with pytest.raises(UnsafePayload, match="repeats a key"):
        loads_json(text)


def test_nesting_is_limited() -> None:
    assert loads_json("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) is not None
    with pytest.raises(UnsafePayload, match="deeper than 64"):
        loads_json("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))
