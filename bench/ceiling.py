"""The HTTP ceiling: the cheapest Starlette app that reads the body and answers 204.

Served exactly like the gateway (uvicorn, same loop and HTTP implementation, same workers), it
is what the gateway's requests/s are compared with.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def receive(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


def create_app() -> Starlette:
    """Factory for `uvicorn --factory`."""
    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])
