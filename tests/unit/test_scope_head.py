"""The head of a request to an ingest route, made from its scope (gateway/app.py,
`_scope_head`): the same mappings as Starlette's request gives, whatever the headers."""

from __future__ import annotations

import os
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request

from gateway.app import _head, _Headers, _request_id, _scope_head

NAMES = st.sampled_from(
    [b"content-type", b"authorization", b"x-request-id", b"content-length", b"x-a", b"X-A"]
)
RAW = st.lists(st.tuples(NAMES, st.binary(max_size=8)), max_size=8)
LOOKUPS = st.lists(
    st.sampled_from(["content-type", "Content-Type", "AUTHORIZATION", "x-a", "X-A", "none"]),
    max_size=6,
)


def scope_of(raw: list[tuple[bytes, bytes]], query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/v1/caliper",
        "query_string": query,
        "headers": raw,
        "client": ("10.0.0.1", 1234),
    }


@given(raw=RAW, lookups=LOOKUPS)
def test_header_lookups_find_what_starlette_finds(
    raw: list[tuple[bytes, bytes]], lookups: list[str]
) -> None:
    fast, starlette = _Headers(scope_of(list(raw))), Headers(scope=scope_of(list(raw)))
    for name in lookups:
        assert (name in fast) == (name in starlette)
        assert fast.get(name) == starlette.get(name)
        assert fast.get(name, "default") == starlette.get(name, "default")
        assert fast.getlist(name) == starlette.getlist(name)
        if name in starlette:
            assert fast[name] == starlette[name]
    assert fast.items() == starlette.items()
    assert fast == starlette
    assert len(fast) == len(starlette)


@given(
    raw=RAW,
    query=st.sampled_from([b"", b"a=1", b"a=1&a=2&b", b"x=%20y&&z="]),
)
def test_the_head_from_the_scope_is_the_head_from_the_request(
    raw: list[tuple[bytes, bytes]], query: bytes
) -> None:
    raw = [(name, value) for name, value in raw if name != b"x-request-id"]
    raw.append((b"x-request-id", b"given-id"))
    fast = _scope_head(scope_of(list(raw), query))
    slow = _head(Request(scope_of(list(raw), query)))
    assert fast.method == slow.method
    assert dict(fast.headers.items()) == dict(slow.headers.items())
    assert isinstance(fast.query, QueryParams)
    assert isinstance(slow.query, QueryParams)
    assert fast.query == slow.query
    assert fast.query.multi_items() == slow.query.multi_items()
    assert dict(fast.path_params) == dict(slow.path_params)
    assert (fast.client, fast.base_url) == (slow.client, slow.base_url)
    assert fast.request_id == slow.request_id == "given-id"


def test_a_request_without_a_usable_id_gets_a_random_uuid4() -> None:
    for given_id in ({}, {"x-request-id": ""}, {"x-request-id": "bad id with spaces"}):
        made = {_request_id(given_id) for _ in range(200)}
        assert len(made) == 200
        for request_id in made:
            parsed = uuid.UUID(hex=request_id)
            assert parsed.version == 4
            assert parsed.variant == uuid.RFC_4122
            assert parsed.hex == request_id
    assert _request_id({"x-request-id": "abc-123"}) == "abc-123"


def test_request_ids_are_not_shared_with_a_forked_process() -> None:
    _request_id({})  # the pool holds bytes now
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next id, to the parent
        os.write(writer, _request_id({}).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    theirs = os.read(reader, 64).decode()
    os.close(reader)
    ours = _request_id({})
    assert len(theirs) == len(ours) == 32
    assert theirs != ours
