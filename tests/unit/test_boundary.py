"""The error boundary (gateway/boundary.py): every error the gateway answers with becomes the
reply of the vendor whose route it is, with the headers it calls for, and nothing else does.
What the router answers itself (404, 405) is tested on the running gateway in
tests/integration/test_unrouted.py."""

from __future__ import annotations

import orjson
import pytest

from gateway.boundary import Boundary
from gateway.errors import (
    BrokerUnavailable,
    ConfigError,
    GatewayError,
    MalformedPayload,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    SignatureRefused,
    Unauthorized,
)
from gateway.vendors import registry

BOUNDARY = Boundary()


def test_an_error_is_answered_in_the_vendors_format() -> None:
    canvas = registry()["canvas"]
    reply = BOUNDARY.reply(canvas, NotFound("no attempt 3"))
    assert reply == canvas.render_error(NotFound("no attempt 3"))
    assert reply.status == 404
    assert list(orjson.loads(reply.body)) == ["errors"]


def test_without_a_vendor_an_error_is_problem_json() -> None:
    reply = BOUNDARY.reply(None, NotFound("no such route"))
    assert (reply.status, reply.media_type) == (404, "application/problem+json")
    problem = orjson.loads(reply.body)
    assert problem["type"] == "urn:assessment-gateway:error:not_found"
    assert dict(reply.headers) == {}


@pytest.mark.parametrize(
    ("error", "headers"),
    [
        (RateLimited("slow down", 7), {"retry-after": "7"}),
        (BrokerUnavailable("Kafka is away"), {"retry-after": "5"}),
        (MethodNotAllowed("not this method", "GET, HEAD"), {"allow": "GET, HEAD"}),
        (MalformedPayload("not JSON"), {}),
    ],
)
def test_the_headers_an_answer_calls_for(error: GatewayError, headers: dict[str, str]) -> None:
    reply = BOUNDARY.reply(None, error)
    assert dict(reply.headers) == headers
    assert reply.status == error.status


def test_a_request_refused_before_it_was_taken_closes_its_connection() -> None:
    caliper = registry()["caliper"]
    reply = BOUNDARY.reply(caliper, Unauthorized("invalid credentials"), taken=False)
    assert reply.status == 401
    assert reply.headers["connection"] == "close"
    assert reply.headers["www-authenticate"]  # the vendor's own header stays
    signed = BOUNDARY.reply(caliper, SignatureRefused("invalid signature"), taken=False)
    assert "www-authenticate" not in signed.headers


def test_an_unexpected_exception_is_answered_500_and_logged() -> None:
    try:
        raise RuntimeError("a bug")
    except RuntimeError:
        error = BOUNDARY.failed(None, "req-1")
    assert (error.status, error.code) == (500, "internal_error")
    assert BOUNDARY.reply(None, error).status == 500


def test_a_start_up_error_is_no_answer() -> None:
    assert not issubclass(ConfigError, GatewayError)
    assert ConfigError("bad port").message == "bad port"
