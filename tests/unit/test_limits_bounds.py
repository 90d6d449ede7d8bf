"""The count of a JSON body's values (gateway/limits.py) is skipped where the body's length
already bounds it: the answers must be those of always counting, for every body."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import UnsafePayload
from gateway.limits import MAX_JSON_NODES, InvalidJson, _values_bound, loads_json


def _dumps(value: Any) -> bytes:
    """JSON text of `value`; an integer orjson cannot write (over 64 bits) is written by
    hand, as a sender may."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return str(value).encode() if isinstance(value, int) else b"[]"


BODIES = (
    st.binary(max_size=300)
    | st.lists(
        st.sampled_from([b"{", b"}", b"[", b"]", b'"a"', b":", b",", b"1", b"-2.5e3", b" "])
    ).map(b"".join)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(max_size=5), children, max_size=5)
        ),
        max_leaves=30,
    ).map(_dumps)
)


def counted(text: bytes) -> Any:
    """loads_json as it was before the bound: the values always counted first."""
    if _values_bound(text) > MAX_JSON_NODES:
        raise UnsafePayload(f"the JSON has more than {MAX_JSON_NODES} values")
    return loads_json(text)


def outcome(read: Any, text: bytes) -> tuple[str, Any]:
    try:
        return "value", read(text)
    except (InvalidJson, UnsafePayload) as error:
        return type(error).__name__, str(error)


@settings(max_examples=300, deadline=None)
@given(text=BODIES)
def test_a_body_within_the_length_bound_is_read_as_when_counted(text: bytes) -> None:
    assert _values_bound(text) <= len(text)
    assert outcome(loads_json, text) == outcome(counted, text)


@pytest.mark.parametrize(
    "text",
    [
        b"[" + b"0," * (MAX_JSON_NODES // 2 - 2) + b"0]",  # just under the length bound
        b"[" + b"[]," * (MAX_JSON_NODES // 3) + b"0]",  # over it, values within the limit
        b"[" + b"1," * MAX_JSON_NODES + b"1]",  # over both: refused
        b"[" + b"{}," * (MAX_JSON_NODES // 2) + b"{}]",  # over both: refused
        b" " * MAX_JSON_NODES + b"[0]",
    ],
)
def test_large_bodies_get_the_answers_of_counting(text: bytes) -> None:
    assert outcome(loads_json, text) == outcome(counted, text)
