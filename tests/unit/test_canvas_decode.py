"""Decoding a Canvas POST: JSON, the Rack-nested form (Rack's own rules), canvasapi's flat form."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import requests
from canvasapi.quiz import QuizSubmissionEvent  # type: ignore[import-untyped]  # no stubs
from canvasapi.util import combine_kwargs  # type: ignore[import-untyped]  # no stubs

from gateway.errors import MalformedPayload, RackParameterError, UnsupportedMediaType
from gateway.pipeline import split_request
from gateway.vendors.base import Inbound
from gateway.vendors.canvas import VENDOR
from gateway.vendors.canvas.normalize import (
    FLAT_EVENT_SCHEMA,
    decode,
    parse_rack_form,
)
from tests.support.schemas import SCHEMAS

FORM = "application/x-www-form-urlencoded"
PATH = {"course_id": "1", "quiz_id": "2", "id": "3"}


def inbound(body: bytes | str, media_type: str = FORM) -> Inbound:
    raw = body.encode() if isinstance(body, str) else body
    return Inbound("POST", media_type, raw, path_params=PATH)


def events_of(body: bytes | str, media_type: str = FORM) -> list[Any]:
    events: list[Any] = decode(inbound(body, media_type))["quiz_submission_events"]
    return events


# --- Rack's parse_nested_query --------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "params"),
    [
        ("a=1&b=2", {"a": "1", "b": "2"}),
        ("a=1&a=2", {"a": "2"}),  # a plain key: the last value wins
        ("a", {"a": ""}),
        ("a[b]=1&a[c]=2", {"a": {"b": "1", "c": "2"}}),
        ("a[b][c]=1", {"a": {"b": {"c": "1"}}}),
        ("a[]=1&a[]=2", {"a": ["1", "2"]}),
        ("a[][b]=1&a[][c]=2", {"a": [{"b": "1", "c": "2"}]}),
        # A key the last hash already has starts a new element.
        ("a[][b]=1&a[][c]=2&a[][b]=3", {"a": [{"b": "1", "c": "2"}, {"b": "3"}]}),
        # Deeper keys decide by the whole nested key, not its first part.
        (
            "a[][d][x]=1&a[][d][y]=2&a[][d][x]=3",
            {"a": [{"d": {"x": "1", "y": "2"}}, {"d": {"x": "3"}}]},
        ),
        # Arrays inside the last hash never start a new element.
        ("a[][t]=v&a[][d][]=1&a[][d][]=2", {"a": [{"t": "v", "d": ["1", "2"]}]}),
        (
            "a[][d][][q]=1&a[][d][][v]=x&a[][d][][q]=2",
            {"a": [{"d": [{"q": "1", "v": "x"}, {"q": "2"}]}]},
        ),
        ("a%5B%5D%5Bb%5D=caf%C3%A9+au+lait", {"a": [{"b": "café au lait"}]}),
        ("a[0][b]=1&a[1][b]=2", {"a": {"0": {"b": "1"}, "1": {"b": "2"}}}),
        ("[]=1&[a]=2", {"a": "2"}),  # brackets around the name are dropped, as Rack does
    ],
)
def test_rack_nested_params(query: str, params: dict[str, Any]) -> None:
    assert parse_rack_form(query.encode()) == params


@pytest.mark.parametrize("query", ["a=1&a[]=2", "a[]=1&a[b]=2", "a[b]=1&a[]=2", "a[b]=1&a[b][c]=2"])
def test_conflicting_rack_keys_are_malformed(query: str) -> None:
    with pytest.raises(RackParameterError):
        parse_rack_form(query.encode())


def test_rack_depth_is_limited() -> None:
    deep = "a" + "[b]" * 40 + "=1"
    with pytest.raises(MalformedPayload, match="nested too deeply"):
        parse_rack_form(deep.encode())
    assert parse_rack_form(("a" + "[b]" * 5 + "=1").encode())


def test_a_form_that_is_not_utf8_is_malformed() -> None:
    with pytest.raises(MalformedPayload, match="UTF-8"):
        parse_rack_form(b"a=%FF%FE")


# --- the three encodings ---------------------------------------------------------------------


def test_json_events() -> None:
    body = {"quiz_submission_events": [{"event_type": "page_blurred", "event_data": None}]}
    batch = decode(inbound(orjson.dumps(body), "application/json"))
    assert batch == {
        "course_id": "1",
        "quiz_id": "2",
        "submission_id": "3",
        "encoding": "json",
        "quiz_submission_events": [{"event_type": "page_blurred", "event_data": None}],
    }


def test_nested_form_events_have_string_leaves() -> None:
    body = (
        "quiz_submission_events[][event_type]=question_flagged"
        "&quiz_submission_events[][event_data][flagged]=true"
        "&quiz_submission_events[][event_data][questionId]=7"
        "&quiz_submission_events[][event_type]=question_viewed"
        "&quiz_submission_events[][event_data][]=7&quiz_submission_events[][event_data][]=8"
    )
    assert events_of(body) == [
        {"event_type": "question_flagged", "event_data": {"flagged": "true", "questionId": "7"}},
        {"event_type": "question_viewed", "event_data": ["7", "8"]},
    ]


def test_the_flat_form_is_exactly_what_canvasapi_sends() -> None:
    """canvasapi's own encoder (combine_kwargs, then requests) makes the body we accept."""
    events = [
        QuizSubmissionEvent(None, {"event_type": t, "event_data": {"x": 1}})
        for t in ("session_started", "page_blurred")
    ]
    params = combine_kwargs(quiz_submission_events=events)
    body = requests.Request("POST", "http://canvas.invalid/", data=params).prepare().body
    assert (
        body
        == "quiz_submission_events%5B%5D=session_started&quiz_submission_events%5B%5D=page_blurred"
    )
    assert events_of(str(body)) == ["session_started", "page_blurred"]
    items = split_request(VENDOR, inbound(str(body)), SCHEMAS)
    assert [(i.payload, i.schema, i.meta["encoding"]) for i in items] == [
        ("session_started", FLAT_EVENT_SCHEMA, "flat"),
        ("page_blurred", FLAT_EVENT_SCHEMA, "flat"),
    ]


def test_jquery_indexed_arrays_are_arrays_in_index_order() -> None:
    body = (
        "quiz_submission_events[10][event_type]=c&quiz_submission_events[2][event_type]=b"
        "&quiz_submission_events[0][event_type]=a"
    )
    assert [e["event_type"] for e in events_of(body)] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("body", "media_type"),
    [
        (b"", "application/json"),
        (b"{}", "application/json"),
        (b'{"quiz_submission_events": null}', "application/json"),
        (b"access_token=abc", FORM),
        (b"", FORM),
        (b"", ""),  # a bare POST with no body at all
    ],
)
def test_a_missing_array_is_no_events(body: bytes, media_type: str) -> None:
    assert events_of(body, media_type) == []


def test_json_with_a_vendor_suffix_and_charset_free_media_type() -> None:
    assert events_of(b'{"quiz_submission_events": []}', "application/vnd.api+json") == []


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{not json", "not valid JSON"), (b"[]", "expected a JSON object"), (b'"x"', "JSON object")],
)
def test_json_that_is_no_object_is_malformed(body: bytes, message: str) -> None:
    with pytest.raises(MalformedPayload, match=message):
        decode(inbound(body, "application/json"))


@pytest.mark.parametrize(
    "body",
    [b'{"quiz_submission_events": "page_blurred"}', b'{"quiz_submission_events": {"a": 1}}'],
)
def test_events_that_are_no_array_fail_the_batch_schema(body: bytes) -> None:
    with pytest.raises(MalformedPayload) as raised:
        split_request(VENDOR, inbound(body, "application/json"), SCHEMAS)
    assert [e.path for e in raised.value.errors] == ["/quiz_submission_events"]


@pytest.mark.parametrize("media_type", ["text/plain", "multipart/form-data", "application/xml", ""])
def test_other_media_types_are_unsupported(media_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="application/json or"):
        decode(inbound(b"quiz_submission_events[]=x", media_type))
