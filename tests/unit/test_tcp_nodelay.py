"""The gateway's listening sockets give every connection TCP_NODELAY: an answer written as its head
then its body (any answer with a body) must not wait for the client's delayed ACK (40 ms)."""

from __future__ import annotations

import asyncio
import socket

from gateway.http_server import listen
from tests.support.http import free_port


async def test_accepted_connections_have_nagle_off() -> None:
    (sock,) = listen("127.0.0.1", free_port(), 0)
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            raw = transport.get_extra_info("socket")
            seen.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        assert await asyncio.wait_for(seen, 5) != 0
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
