"""What the router answers itself, on either port: a path no route has (404) and a method a
route does not take (405, with `Allow`) are answered like every other refusal, in problem+json
with the request's `X-Request-Id`, and logged as one `request` line (`route` null for a 404,
the route for a 405). The real `gateway serve`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson

from tests.support.gateway import Gateway


async def logged(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The `request` line of the request `request_id` (written once its answer is made)."""
    for _ in range(50):
        for line in gateway.log_lines():
            if line.get("event") == "request" and line.get("request_id") == request_id:
                return line
        await asyncio.sleep(0.1)
    raise AssertionError(f"no request line for {request_id}")


def problem(response: httpx.Response, code: str) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = orjson.loads(response.content)
    assert body["type"] == f"urn:assessment-gateway:error:{code}"
    assert body["status"] == response.status_code
    return body


async def test_a_path_no_route_has_is_a_logged_problem_404(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    for method in ("GET", "POST"):
        request_id = f"unrouted-404-{method.lower()}"
        response = await client.request(
            method, "/no-such-route?token=x", headers={"X-Request-Id": request_id}
        )
        assert response.status_code == 404
        problem(response, "not_found")
        assert response.headers["x-request-id"] == request_id
        assert response.headers.get("connection") != "close"  # taken as it was: kept alive
        line = await logged(gateway, request_id)
        assert (line["status"], line["method"], line["route"], line["error"]) == (
            404,
            method,
            None,
            "not_found",
        )
        assert line["vendor"] is None
        assert line["tenant"] is None
        assert "token=x" not in orjson.dumps(line).decode()  # never the query string


async def test_a_method_a_route_does_not_take_is_a_logged_problem_405_with_allow(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    response = await client.get("/v1/pearson/eventing")
    assert response.status_code == 405
    problem(response, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    request_id = response.headers["x-request-id"]  # made by the gateway: none was sent
    assert len(request_id) == 32
    line = await logged(gateway, request_id)
    assert (line["status"], line["method"], line["route"], line["error"]) == (
        405,
        "GET",
        "/v1/pearson/eventing",
        "method_not_allowed",
    )


async def test_the_admin_port_answers_the_same_way(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, gateway: Gateway
) -> None:
    unknown = await admin.get("/no-such-route")
    assert unknown.status_code == 404
    assert unknown.content == (await client.get("/no-such-route")).content
    await logged(gateway, unknown.headers["x-request-id"])
    posted = await admin.post("/healthz")
    assert posted.status_code == 405
    problem(posted, "method_not_allowed")
    assert set(posted.headers["allow"].split(", ")) == {"GET", "HEAD"}  # Starlette's, in any order
    line = await logged(gateway, posted.headers["x-request-id"])
    assert line["route"] == "/healthz"
