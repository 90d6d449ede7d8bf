"""The parts of the HTTP limits (issue #18) that need no server: what the head alone proves of a
credential, the head's framing and charset checks, the unverified pool, the deadlines swept by
one timer, and the settings that configure them. The server itself is exercised in
tests/integration/test_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from gateway.admission import BodyDeadlines, Unverified
from gateway.auth import FORM, Authenticator
from gateway.deadlines import Deadlines
from gateway.errors import (
    ConfigError,
    MalformedPayload,
    Overloaded,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.http_server import uvicorn_options
from gateway.limits import check_head, media_type_of
from gateway.settings import Credential, ServerSettings, Tenant, load_settings
from gateway.vendors import registry

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
WHSEC = "whsec_" + base64.b64encode(b"the-signing-key-of-tenant-north!").decode()
TENANTS = (
    Tenant(
        "north",
        (
            Credential("caliper", "caliper-token"),
            Credential("canvas", "canvas-token"),
            Credential("inspera", "inspera-secret"),
            Credential("inspera", WHSEC, scheme="standard-webhooks", tolerance_seconds=300),
            Credential("pearson", "0123456789abcdef", principal="north"),
        ),
    ),
)
AUTH = Authenticator(TENANTS, clock=lambda: NOW)
JSON = "application/json"


def head(
    vendor: str, headers: dict[str, str], query: dict[str, str] | None = None
) -> Callable[[str], str | None]:
    """What the head proves, for a media type, in the vendor's scheme."""
    scheme = registry()[vendor]
    return lambda media: AUTH.authenticate_head(scheme, headers, query or {}, media)


# --- credentials from the head -----------------------------------------------------------------


def test_bearer_tokens_are_proven_or_refused_by_the_head() -> None:
    assert head("caliper", {"authorization": "Bearer caliper-token"})(JSON) == "north"
    assert head("caliper", {"authorization": "caliper-token"})(JSON) == "north"
    for wrong in ({"authorization": "Bearer guess"}, {}):
        with pytest.raises(Unauthorized):
            head("caliper", wrong)(JSON)


def test_canvas_waits_for_the_form_only_when_the_head_has_no_token() -> None:
    bearer = {"authorization": "Bearer canvas-token"}
    assert head("canvas", bearer)(JSON) == "north"
    assert head("canvas", bearer)(FORM) == "north"  # the app checks the form as well
    assert head("canvas", {}, {"access_token": "canvas-token"})(JSON) == "north"
    assert head("canvas", {})(FORM) is None  # the token may be in the form
    with pytest.raises(Unauthorized, match="missing credentials"):
        head("canvas", {})(JSON)  # no form, no token: no body can hold one
    with pytest.raises(Unauthorized):
        head("canvas", {"authorization": "Bearer guess"})(FORM)


def test_signatures_over_the_body_wait_for_it_once_the_head_is_complete() -> None:
    assert head("inspera", {"x-inspera-signature": "aB" * 20})(JSON) is None
    for signature, reason in (("", "missing"), ("sha1=" + "a" * 40, "invalid"), ("a" * 39, "in")):
        with pytest.raises(Unauthorized, match=reason):
            head("inspera", {"x-inspera-signature": signature})(JSON)
    assert head("pearson", {})(FORM) is None
    with pytest.raises(Unauthorized):
        head("pearson", {})(JSON)  # the signature travels in a form


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"webhook-timestamp": str(int(NOW.timestamp()) - 299)}, None),
        ({"webhook-timestamp": str(int(NOW.timestamp()) - 301)}, "outside the accepted window"),
        ({"webhook-timestamp": str(int(NOW.timestamp()) + 3600)}, "outside the accepted window"),
        ({"webhook-timestamp": "1e9"}, "not a Unix timestamp"),
        ({"webhook-timestamp": "9" * 13}, "not a Unix timestamp"),
        ({"webhook-id": ""}, "missing"),
        ({"webhook-signature": ""}, "missing"),
    ],
)
def test_standard_webhooks_headers_and_timestamp_are_checked_before_the_body(
    changes: dict[str, str], reason: str | None
) -> None:
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(NOW.timestamp())),
        "webhook-signature": "v1,AAAA",
        **changes,
    }
    proven = head("inspera", headers)
    if reason is None:
        assert proven(JSON) is None  # the signature needs the body
    else:
        with pytest.raises(Unauthorized, match=reason):
            proven(JSON)


# --- the head's framing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON; charset="UTF-8"',
        "application/json;charset=us-ascii",
        f"{FORM}; charset=UTF-8",
        "application/vnd.api+json; charset=utf8",
        "text/plain; charset=iso-8859-1",  # Inspera's lenient case: not read as JSON by type
        "",
    ],
)
def test_utf8_and_other_media_types_pass(content_type: str) -> None:
    assert media_type_of(content_type) == content_type.partition(";")[0].strip().lower()


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-16",
        "application/json; charset=ISO-8859-1",
        f"{FORM}; charset=windows-1252",
        "application/ld+json; version=1; charset=utf-32",
    ],
)
def test_another_charset_on_json_or_a_form_is_415(content_type: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        media_type_of(content_type)


def test_the_head_checks_encodings_and_the_declared_length() -> None:
    assert check_head({"content-type": JSON, "transfer-encoding": "Chunked"}, 10) == JSON
    assert check_head({"content-length": "10"}, 10) == ""
    for coding in ("gzip, chunked", "chunked, chunked", "identity"):
        with pytest.raises(UnsupportedMediaType, match="transfer coding"):
            check_head({"transfer-encoding": coding}, 10)
    with pytest.raises(UnsupportedMediaType, match="content encoding"):
        check_head({"content-encoding": "br"}, 10)
    with pytest.raises(PayloadTooLarge):
        check_head({"content-length": "11"}, 10)
    with pytest.raises(PayloadTooLarge):
        check_head({"content-length": "9" * 5000}, 10)  # never int() of 5,000 digits
    with pytest.raises(MalformedPayload):
        check_head({"content-length": "-1"}, 10)


# --- the unverified pool ------------------------------------------------------------------------


def test_the_unverified_pool_is_bounded_in_all_and_per_client() -> None:
    pool = Unverified(limit=3, per_client=2, retry_after=5)
    pool.take("a")
    pool.take("a")
    with pytest.raises(RateLimited) as held:
        pool.take("a")
    assert held.value.retry_after == 5
    pool.take("b")
    with pytest.raises(Overloaded):
        pool.take("c")
    pool.release("a")
    pool.take("c")
    for client in ("a", "b", "c"):
        pool.release(client)
    assert pool.current == 0
    assert pool._clients == {}  # no address is remembered once it holds nothing


# --- deadlines ----------------------------------------------------------------------------------


async def test_deadlines_expire_late_by_at_most_a_quarter_and_stop_when_none_is_left() -> None:
    expired: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()

    def expire(key: str) -> None:
        expired[key] = loop.time()

    deadlines: Deadlines[str] = Deadlines(expire)
    deadlines.set("a", 0.2)
    deadlines.set("b", 0.2)
    deadlines.set("c", 0.4)
    deadlines.clear("b")
    await asyncio.sleep(0.6)
    assert set(expired) == {"a", "c"}
    assert 0.2 <= expired["a"] - started <= 0.2 + 0.05 + 0.2  # a quarter of 0.2, and slack
    assert 0.4 <= expired["c"] - started <= 0.4 + 0.05 + 0.2
    assert len(deadlines) == 0
    assert deadlines._timer is None  # nothing pending: no timer


async def test_a_body_past_its_deadline_is_told_from_a_real_cancellation() -> None:
    deadlines = BodyDeadlines(0.1)
    never = asyncio.Event()

    async def read() -> str:
        task = deadlines.start()
        try:
            await never.wait()
        except asyncio.CancelledError:
            if deadlines.stop(task):
                return "timed out"
            raise
        finally:
            deadlines.stop(task)
        return "read"

    reading = asyncio.create_task(read())
    assert await reading == "timed out"
    assert reading.cancelling() == 0  # the timeout's cancellation was taken back

    shutdown = asyncio.create_task(read())
    await asyncio.sleep(0)
    shutdown.cancel()  # not the timeout: it goes on
    with pytest.raises(asyncio.CancelledError):
        await shutdown

    async def quick() -> bool:
        task = deadlines.start()
        await asyncio.sleep(0)
        return deadlines.stop(task)

    assert await quick() is False
    await asyncio.sleep(0.2)  # its deadline passes: nothing left to cancel


# --- settings -----------------------------------------------------------------------------------

NEW_SETTINGS = {
    "max_unverified_in_flight": 64,
    "max_unverified_per_client": 16,
    "body_timeout_seconds": 30.0,
    "header_timeout_seconds": 10.0,
    "max_header_bytes": 65536,
    "max_headers": 100,
}


def test_the_limits_have_defaults_and_variables() -> None:
    server = load_settings(environ={}).server
    assert {name: getattr(server, name) for name in NEW_SETTINGS} == NEW_SETTINGS
    assert server.forwarded_allow_ips == ()
    env = {f"GATEWAY_SERVER_{name.upper()}": "7" for name in NEW_SETTINGS}
    env["GATEWAY_SERVER_FORWARDED_ALLOW_IPS"] = "10.0.0.1, 10.1.0.0/16"
    server = load_settings(environ=env).server
    assert {getattr(server, name) for name in NEW_SETTINGS} == {7}
    assert server.forwarded_allow_ips == ("10.0.0.1", "10.1.0.0/16")


@pytest.mark.parametrize("name", sorted(NEW_SETTINGS))
def test_the_limits_must_be_positive(name: str) -> None:
    with pytest.raises(ConfigError, match=f"server.{name} must be positive"):
        load_settings(environ={f"GATEWAY_SERVER_{name.upper()}": "0"})


def test_proxy_headers_are_trusted_only_from_listed_proxies() -> None:
    assert uvicorn_options(ServerSettings())["proxy_headers"] is False
    listed = uvicorn_options(ServerSettings(forwarded_allow_ips=("10.0.0.1",)))
    assert listed["proxy_headers"] is True
    assert listed["forwarded_allow_ips"] == ["10.0.0.1"]
