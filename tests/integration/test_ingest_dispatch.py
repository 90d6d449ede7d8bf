"""The vendors' ingest routes are taken before Starlette's middleware and router
(gateway/app.py, `_Gateway`): every request they take must get the answer Starlette's stack
gives it, and what they do not take must still reach that stack.

The real app, its lifespan running against the embedded broker, is called over ASGI twice for
each request: as it is (the ingest routes first) and through Starlette's own `__call__` (its
middleware, the admin port's, its router and exception handlers: what the ingest routes stand
in front of). Status, headers and body must be the same.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from bench import payloads
from gateway import app as app_module
from gateway.app import create_app
from gateway.settings import load_settings
from tests.support.gateway import ROOT

CALIPER = payloads.caliper()
CANVAS = payloads.canvas()
PEARSON = payloads.pearson(4)


def headers_of(payload: payloads.Payload) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in payload.headers)


def body_of(payload: payloads.Payload, unique: str) -> bytes:
    if payload.lines:
        return payload.lines[int(unique) % len(payload.lines)].encode()
    return payload.template.replace("{{UNIQUE}}", unique).encode()


@pytest.fixture
async def app(broker: str, tmp_path: Path) -> AsyncIterator[Starlette]:
    suffix = uuid.uuid4().hex[:8]
    environ = {
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": f"dispatch.{suffix}",
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"dispatch.deadletter.{suffix}",
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path / "state"),
        "GATEWAY_SERVER_ADMIN_PORT": "0",  # one port: the operational routes share the router
    }
    application = create_app(load_settings(ROOT / "gateway.dev.toml", environ=environ))
    async with application.router.lifespan_context(application):
        yield application


def starlette_stack(app: Starlette) -> Any:
    """The app as Starlette alone would serve it."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await Starlette.__call__(app, scope, receive, send)

    return asgi


async def answer(
    asgi: Any, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    transport = httpx.ASGITransport(app=asgi, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        response = await http.request(method, path, headers=headers, content=body)
    return response.status_code, sorted(response.headers.multi_items()), response.content


def both_ways(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Ask the app, then Starlette's stack alone, the same request; return both answers and
    whether the ingest routes took the first."""
    taken: list[str] = []
    scope_head = app_module._scope_head

    def counting(scope: Any) -> Any:
        taken.append(scope["path"])
        return scope_head(scope)

    monkeypatch.setattr(app_module, "_scope_head", counting)

    async def ask(
        method: str, path: str, headers: dict[str, str], first: bytes, second: bytes
    ) -> tuple[Any, Any, bool]:
        taken.clear()
        whole = await answer(app, method, path, headers, first)
        dispatched = bool(taken)
        taken.clear()
        routed = await answer(starlette_stack(app), method, path, headers, second)
        assert not taken
        return whole, routed, dispatched

    return ask


REQUESTS = [
    # (name, payload, path or None for the payload's, header changes, body or None)
    ("caliper", CALIPER, None, {}, None),
    ("canvas: a route with parameters", CANVAS, None, {}, None),
    ("pearson: a form, signed", PEARSON, None, {}, None),
    ("no credential", CALIPER, None, {"Authorization": None}, None),
    ("a wrong credential", CALIPER, None, {"Authorization": "Bearer nope"}, None),
    ("a media type it does not take", CALIPER, None, {"Content-Type": "text/plain"}, None),
    (
        "a charset it does not read",
        CALIPER,
        None,
        {"Content-Type": "application/json; charset=latin-1"},
        None,
    ),
    ("compressed", CALIPER, None, {"Content-Encoding": "gzip"}, None),
    ("not JSON", CALIPER, None, {}, b"{not json"),
    ("an empty body", CALIPER, None, {}, b""),
    ("a query string", CALIPER, "/v1/caliper?a=1&a=2&b", {}, None),
    (
        "canvas, another course",
        CANVAS,
        "/api/v1/courses/7/quizzes/8/submissions/9/events",
        {},
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "payload", "path", "changes", "body"), REQUESTS, ids=[r[0] for r in REQUESTS]
)
async def test_a_vendor_route_answers_as_through_the_router(  # noqa: PLR0917  # parametrized
    app: Starlette,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    payload: payloads.Payload,
    path: str | None,
    changes: dict[str, str | None],
    body: bytes | None,
) -> None:
    headers = {**headers_of(payload), "X-Request-Id": f"dispatch-{uuid.uuid4().hex}"}
    for key, value in changes.items():
        if value is None:
            headers.pop(key)
        else:
            headers[key] = value
    first = body if body is not None else body_of(payload, "1")
    second = body if body is not None else body_of(payload, "2")
    ask = both_ways(app, monkeypatch)
    whole, routed, dispatched = await ask("POST", path or payload.path, headers, first, second)
    assert dispatched, name
    assert whole == routed, name


async def test_a_request_without_an_id_gets_a_new_one_each_way(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    ask = both_ways(app, monkeypatch)
    headers = headers_of(CALIPER)
    whole, routed, dispatched = await ask(
        "POST", CALIPER.path, headers, body_of(CALIPER, "3"), body_of(CALIPER, "4")
    )
    assert dispatched
    ids = [dict(answer[1])["x-request-id"] for answer in (whole, routed)]
    assert ids[0] != ids[1]
    for given in ids:
        assert uuid.UUID(hex=given).version == 4
    assert (whole[0], whole[2]) == (routed[0], routed[2]) == (200, b"")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/caliper"),  # the vendor's configuration: an extra route
        ("PUT", "/v1/caliper"),  # 405 from the router
        ("POST", "/v1/caliper/"),  # no such route: 404 (no redirect for a POST route)
        ("POST", "/v1/nothing"),
        ("POST", "/healthz"),  # 405
        ("GET", "/healthz"),
    ],
)
async def test_what_no_ingest_route_takes_goes_to_the_router(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, method: str, path: str
) -> None:
    ask = both_ways(app, monkeypatch)
    headers = {**headers_of(CALIPER), "X-Request-Id": "dispatch-other"}
    whole, routed, dispatched = await ask(method, path, headers, b"{}", b"{}")
    assert not dispatched
    assert whole == routed


async def test_an_exception_is_starlettes_500_either_way(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug (here: reading the body fails outright) is answered as Starlette's error
    middleware answers it."""

    def broken(_: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app_module, "_body", broken)
    ask = both_ways(app, monkeypatch)
    headers = {**headers_of(CALIPER), "X-Request-Id": "dispatch-bug"}
    whole, routed, dispatched = await ask(
        "POST", CALIPER.path, headers, body_of(CALIPER, "5"), body_of(CALIPER, "6")
    )
    assert dispatched
    assert whole == routed
    assert whole[0] == 500
    assert whole[2] == b"Internal Server Error"
