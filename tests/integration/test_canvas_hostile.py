"""Hostile requests to Canvas's routes against a real gateway (issue #18): numbers too large for
SQLite or for a Canvas id, digits that are not ASCII, a forged `Host`, two different tokens.

Each gets a clear answer in Canvas's own error format (`{"errors": [{"message"}]}`), is logged
like any other request, and leaves no traceback: one request must never stop the gateway.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.canvas import AUTH, FORM, QuizSubmission, post_json, stamped
from tests.support.gateway import TOKEN, Gateway, running_gateway

TOO_LARGE = "99999999999999999999"  # 20 digits: more than SQLite's (and Canvas's) 64-bit integers
ID_23_DIGITS = "1" * 23
PUBLIC_URL = "https://gateway.example.edu"


async def request_line(gateway: Gateway, request_id: str) -> dict[str, Any]:
    """The gateway's log line for one request (written once the answer is sent)."""
    for _ in range(50):
        lines = [
            line
            for line in gateway.log_lines()
            if line.get("event") == "request" and line.get("request_id") == request_id
        ]
        if lines:
            (line,) = lines
            return line
        await asyncio.sleep(0.1)
    raise AssertionError(f"no request line for {request_id}")


async def answered(
    client: httpx.AsyncClient, gateway: Gateway, path: str, **options: Any
) -> httpx.Response:
    """GET `path`, checking the gateway logged it and wrote no traceback meanwhile."""
    before = gateway.log_path.read_bytes()
    request_id = uuid.uuid4().hex
    headers = {**AUTH, "X-Request-Id": request_id, **options.pop("headers", {})}
    response = await client.get(path, headers=headers, **options)
    line = await request_line(gateway, request_id)
    assert line["status"] == response.status_code
    written = gateway.log_path.read_bytes()[len(before) :]
    assert b"Traceback" not in written, written.decode(errors="replace")
    return response


def canvas_error(response: httpx.Response) -> str:
    """The message of a Canvas-format error answer."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["errors"]
    message: str = body["errors"][0]["message"]
    return message


# --- numbers ----------------------------------------------------------------------------------


async def test_a_page_beyond_64_bits_is_a_400(client: httpx.AsyncClient, gateway: Gateway) -> None:
    sub = QuizSubmission.fresh()
    assert (await post_json(client, sub, stamped("page_blurred", 1))).status_code == 204
    response = await answered(client, gateway, sub.events, params={"page": TOO_LARGE})
    assert response.status_code == 400
    assert "page" in canvas_error(response)
    # The gateway keeps serving, and a sane page still works.
    fine = await answered(client, gateway, sub.events, params={"page": "1"})
    assert [e["event_type"] for e in fine.json()["quiz_submission_events"]] == ["page_blurred"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("per_page", TOO_LARGE, 200),  # clamped to 100, as Canvas clamps
        ("attempt", TOO_LARGE, 404),  # an attempt that cannot exist
        ("page", "9" * 5000, 400),  # int() would refuse it (4300 digits at most): not page 1
        ("page", "0" * 5000 + "1", 200),  # page 1, however it is padded
    ],
    ids=["per_page", "attempt", "page-5000-digits", "page-5000-zeros"],
)
async def test_other_huge_numbers_get_canvas_answers(
    client: httpx.AsyncClient, gateway: Gateway, name: str, value: str, expected: int
) -> None:
    sub = QuizSubmission.fresh()
    assert (await post_json(client, sub, stamped("page_blurred", 1))).status_code == 204
    response = await answered(client, gateway, sub.events, params={name: value})
    assert response.status_code == expected


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/courses/{ID_23_DIGITS}",
        f"/api/v1/courses/101/quizzes/{ID_23_DIGITS}",
        f"/api/v1/courses/101/quizzes/202/submissions/{ID_23_DIGITS}",
        f"/api/v1/courses/{ID_23_DIGITS}/quizzes/202/submissions/303/events",
    ],
    ids=["course", "quiz", "submission", "events"],
)
async def test_an_id_beyond_64_bits_cannot_exist_404(
    client: httpx.AsyncClient, gateway: Gateway, path: str
) -> None:
    response = await answered(client, gateway, path)
    assert response.status_code == 404
    assert canvas_error(response) == "The specified resource does not exist."


async def test_events_posted_for_an_id_beyond_64_bits_are_refused_404(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    # The quiz log could never serve them back: the POST answers as Canvas does, 404.
    path = f"/api/v1/courses/{ID_23_DIGITS}/quizzes/202/submissions/303/events"
    body = orjson.dumps({"quiz_submission_events": [stamped("page_blurred", 1)]})
    headers = {**AUTH, "Content-Type": "application/json"}
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 404
    assert canvas_error(response) == "The specified resource does not exist."


async def test_digits_that_are_not_ascii_are_no_page_number(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    sub = QuizSubmission.fresh()
    events = [stamped(kind, n) for n, kind in enumerate(["page_blurred", "page_focused", "x"])]
    assert (await post_json(client, sub, *events)).status_code == 204
    third = await answered(client, gateway, sub.events, params={"per_page": "1", "page": "3"})
    assert [e["event_type"] for e in third.json()["quiz_submission_events"]] == ["x"]
    # U+0663 ARABIC-INDIC DIGIT THREE: Python's int() reads it as 3, Canvas (Ruby) does not.
    arabic = await answered(client, gateway, sub.events, params={"per_page": "1", "page": "٣"})
    assert arabic.status_code == 200
    assert [e["event_type"] for e in arabic.json()["quiz_submission_events"]] == ["page_blurred"]
    assert 'page=1&per_page=1>; rel="current"' in arabic.headers["link"]


# --- Link headers -----------------------------------------------------------------------------


def links(response: httpx.Response) -> dict[str, str]:
    return {link["rel"]: link["url"] for link in response.links.values()}


async def three_pages(client: httpx.AsyncClient) -> QuizSubmission:
    sub = QuizSubmission.fresh()
    events = [stamped("page_blurred", n) for n in range(5)]
    assert (await post_json(client, sub, *events)).status_code == 204
    return sub


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "127.0.0.1:1@evil.example", "127.0.0.1/evil"]
)
async def test_a_forged_host_never_reaches_the_link_header(
    client: httpx.AsyncClient, gateway: Gateway, host: str
) -> None:
    sub = await three_pages(client)
    response = await answered(
        client, gateway, sub.events, params={"per_page": "2"}, headers={"Host": host}
    )
    assert response.status_code == 200
    assert "evil" not in response.headers["link"]
    # No public URL configured, and a Host that is not the address the gateway listens on:
    # the links are relative references (RFC 8288), which can name no other host. (Starlette
    # itself ignores a Host that is no host name, `a@b` or `a/b`, and uses the socket's address.)
    found = links(response).values()
    assert found
    assert all(url.startswith(("/api/v1/courses/", f"{gateway.url}/api/v1/")) for url in found)
    if host.startswith("evil.example"):
        assert all(url.startswith("/api/v1/courses/") for url in found)


@pytest.fixture(scope="module")
def public_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway told its public URL, as one behind a reverse proxy is."""
    env = {"GATEWAY_SERVER_PUBLIC_URL": PUBLIC_URL}
    yield from running_gateway(broker, tmp_path_factory.mktemp("canvas-public-url"), env)


@pytest.fixture
async def public_client(public_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=public_gateway.url, timeout=30) as http:
        yield http


@pytest.mark.parametrize("host", [None, "evil.example"])
async def test_links_name_the_configured_public_url(
    public_client: httpx.AsyncClient, public_gateway: Gateway, host: str | None
) -> None:
    sub = await three_pages(public_client)
    headers = {"Host": host} if host else {}
    response = await answered(
        public_client, public_gateway, sub.events, params={"per_page": "2"}, headers=headers
    )
    assert response.status_code == 200
    found = links(response)
    assert set(found) == {"current", "next", "first", "last"}
    assert all(url.startswith(f"{PUBLIC_URL}/api/v1/courses/") for url in found.values())
    assert "evil" not in response.headers["link"]


# --- two tokens -------------------------------------------------------------------------------


async def test_two_different_access_tokens_are_refused(
    client: httpx.AsyncClient, gateway: Gateway
) -> None:
    sub = QuizSubmission.fresh()
    body = orjson.dumps({"quiz_submission_events": [stamped("page_blurred", 1)]})
    json_type = {"Content-Type": "application/json"}
    # The wrong token first: before the fix the last one silently won (and 204 was answered).
    twice = await client.post(
        sub.events,
        params=[("access_token", "not-the-token"), ("access_token", TOKEN)],
        content=body,
        headers=json_type,
    )
    header_and_query = await client.post(
        sub.events,
        params={"access_token": "not-the-token"},
        content=body,
        headers={**json_type, **AUTH},
    )
    query_and_form = await client.post(
        sub.events,
        params={"access_token": TOKEN},
        content=b"access_token=not-the-token&quiz_submission_events[]=page_focused",
        headers={"Content-Type": FORM},
    )
    for response in (twice, header_and_query, query_and_form):
        assert response.status_code == 400
        assert "more than one" in canvas_error(response)
        assert TOKEN not in response.text
    # Nothing of these requests reached the quiz log.
    log = await answered(client, gateway, sub.events)
    assert log.json() == {"quiz_submission_events": []}
    # The same token twice names one credential: taken.
    same = await client.post(
        sub.events,
        params=[("access_token", TOKEN), ("access_token", TOKEN)],
        content=body,
        headers=json_type,
    )
    assert same.status_code == 204
