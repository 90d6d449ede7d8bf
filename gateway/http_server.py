"""The gateway's HTTP/1.1 server: uvicorn's httptools protocol with the limits a request's head
must keep before the app sees it, the uvicorn options that `gateway serve` and `gateway dev`
share, and the two ports they listen on.

Two ports, one server: the public port (`server.port`, vendor routes only) and the admin port
(`server.admin_port`: probes, metrics, the OpenAPI document). Both sockets are bound before the
app starts, by the process that forks the workers when there are several (as uvicorn binds its
own socket), and every worker serves both; the app tells them apart by the local port of each
connection (gateway/app.py). With several workers a scrape of /metrics sums them all:
prometheus-client's multiprocess mode, in `<server.state_dir>/metrics`, emptied at every start.

uvicorn alone reads a request's head for as long as the client takes and however large it is:
a connection that sends a header byte now and then is kept for ever, and one header of 64 MB is
gathered whole in memory (issue #18). `GatewayHttpProtocol` bounds, per connection:

- time: the request line and headers must arrive within `server.header_timeout_seconds` of the
  connection's start (its first request) or of the request's first byte (later requests on a
  kept-alive connection; between requests uvicorn's keep-alive timeout applies). Past it: 408
  and close, or just close when nothing of a request came;
- size: at most `server.max_header_bytes` bytes, request line included, in at most
  `server.max_headers` fields. Past either: 431 and close. Bytes are counted as they arrive,
  before the parser sees them: httptools gathers a header's value until the value ends, so
  counting parsed headers would let one endless header grow without bound;
- a body still arriving after the app answered without reading it (a 404 to a POST, say) gets
  `server.body_timeout_seconds`, then the connection is closed. A body the app reads is bounded
  by the pipeline (`BodyDeadlines` of gateway/admission.py: 408 in the vendor's format);
- pipelining: at most `MAX_PIPELINED` requests wait behind the one being answered. uvicorn
  resumes reading after every answer and httptools parses all it read, so a client that sends
  tiny requests and reads no answers queued thousands of them per read (20 such connections
  took a gateway from 91 MiB to 2.4 GiB). Past the bound the connection is closed after the
  answer being made; no HTTP client in use pipelines at all.

Refusals carry a problem+json body and `connection: close`, and are logged as one `http_refused`
line (`status`, `reason`, `client`: the TCP peer; never a header's contents).

Closing a connection while the client is still sending makes the kernel answer with a reset,
and a client that gets one loses the answer it has not read yet: the 413 of a body over the
limit, the 401 of a request refused before its body was read. So a connection closed before its
request was all read (by a refusal here, or by the app's `connection: close`) lingers: it is
half-closed after the answer, and what the client still sends is read and dropped for
`LINGER_SECONDS`, or until the client closes its side.

Deadlines are checked by one timer per event loop (`Deadlines`, gateway/deadlines.py, which
says why), not by a timer per request.
"""

from __future__ import annotations

import asyncio
import functools
import http
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import httptools
import orjson
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import Server, ServerState
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.deadlines import Deadlines
from gateway.errors import ConfigError
from gateway.settings import ServerSettings

log = structlog.get_logger("gateway.http")

# How long a connection closed before its request was all read drains (and drops) what the
# client still sends: 4 MiB on a link of 20 Mbit/s, or on any link the answer of a client that
# reads while it sends.
LINGER_SECONDS: Final = 2.0
# Requests parsed and waiting behind the one being answered, on one connection.
MAX_PIPELINED: Final = 16

# prometheus-client's switch to its multiprocess mode, read when the library is imported: set
# before the workers start (each imports it afresh), never in a process of one worker.
METRICS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Phases of a connection's deadline.
_HEAD: Final = "header_timeout"
_BODY: Final = "body_timeout"
_LINGER: Final = "linger"


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """What `GatewayHttpProtocol` enforces (from `ServerSettings`)."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    max_headers: int

    @classmethod
    def of(cls, server: ServerSettings) -> HeadLimits:
        return cls(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
        )


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _expire(protocol: GatewayHttpProtocol) -> None:
    protocol.deadline_passed()


class _AnswerTransport:
    """The transport uvicorn's request cycles answer on: the connection's own (its `write` and
    `is_closing` themselves, so answering costs nothing more), except that closing it after an
    answer lingers while the request's body is still coming."""

    __slots__ = ("_protocol", "is_closing", "write")

    def __init__(self, protocol: GatewayHttpProtocol, transport: asyncio.Transport) -> None:
        self._protocol = protocol
        self.write = transport.write
        self.is_closing = transport.is_closing

    def close(self) -> None:
        self._protocol.close_after_answer()


# Every connection of the process: one sweep for all of them.
_CONNECTIONS: Final[Deadlines[GatewayHttpProtocol]] = Deadlines(_expire)


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with time and size limits on every request's head."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: HeadLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._phase = ""  # what the connection's deadline, if any, is for
        self._in_head = True  # between a message's end (or the start) and its headers' end
        self._head_bytes = 0  # bytes of the current head received so far
        self._refused = False

    # --- connection -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._answers = cast("asyncio.Transport", _AnswerTransport(self, transport))
        self._deadline(_HEAD, self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        _CONNECTIONS.clear(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: read and dropped
        if self._in_head:
            room = self._max_header_bytes - self._head_bytes
            if len(data) > room:
                self._past_the_limit(data, room)
                return
            self._head_bytes += len(data)
        # The parser's callbacks run in here; this is the whole path of an ordinary request.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._parser_error(error)
        except httptools.HttpParserUpgrade:
            self._upgrade()

    def _past_the_limit(self, data: bytes, room: int) -> None:
        """`data` holds more than the head may still take: its headers must end within `room`
        bytes, and what follows is the body (and maybe further requests)."""
        self._head_bytes += room
        self._feed(data[:room])
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and self._head_bytes:  # the head did not end (no new one began)
            self._refuse(431, "header_too_large")
            return
        self.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        """Part of a read, past the head's limit (`_past_the_limit`)."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._parser_error(error)
        except httptools.HttpParserUpgrade:
            self._upgrade()

    def _parser_error(self, error: httptools.HttpParserError) -> None:
        """A refusal raised in a callback stopped the parser, or the bytes are not HTTP."""
        refused = error.__context__
        if isinstance(error, httptools.HttpParserCallbackError) and isinstance(refused, _Refused):
            self._refuse(refused.status, refused.reason)
            return
        self.logger.warning("Invalid HTTP request received.")  # as uvicorn's data_received
        self.send_400_response("Invalid HTTP request received.")

    def _upgrade(self) -> None:
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            self._unsupported_upgrade_warning()

    # --- parser callbacks -------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)  # not super(): one object less per callback
        if not self._phase:  # a later request on the connection: its clock starts now
            self._deadline(_HEAD, self.limits.header_timeout)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self._max_headers:
            raise _Refused(431, "too_many_headers")
        HttpToolsProtocol.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._no_deadline()
        earlier = self.cycle
        if earlier is not None and len(self.pipeline) >= MAX_PIPELINED:
            raise _Refused(0, "too_many_pipelined")
        HttpToolsProtocol.on_headers_complete(self)
        if self.cycle is not earlier:  # its task has not run yet: nothing was written
            self.cycle.transport = self._answers

    def on_message_complete(self) -> None:
        HttpToolsProtocol.on_message_complete(self)
        self._in_head = True
        self._head_bytes = 0
        if self._phase == _BODY:
            self._no_deadline()

    def on_response_complete(self) -> None:
        if self._refused:  # no further request is served: close (linger) after this answer
            self.server_state.total_requests += 1
            if self._phase != _LINGER and not self.transport.is_closing():
                self._linger()
            return
        HttpToolsProtocol.on_response_complete(self)
        # Answered before the body was all there (the app did not need it): the rest of it gets
        # the body timeout, not as long as the client likes.
        if not self._in_head and not self._phase and not self.transport.is_closing():
            self._deadline(_BODY, self.limits.body_timeout)

    # --- deadlines and refusals -------------------------------------------------------------------

    def _deadline(self, phase: str, seconds: float) -> None:
        self._phase = phase
        _CONNECTIONS.set(self, seconds)

    def _no_deadline(self) -> None:
        if self._phase:
            self._phase = ""
            _CONNECTIONS.clear(self)

    def deadline_passed(self) -> None:
        """Called by the sweep once the connection's deadline has passed."""
        phase, self._phase = self._phase, ""
        if phase == _LINGER:
            self.transport.close()
        elif phase == _HEAD:
            # Nothing of a request yet: closed without an answer, as uvicorn closes idle ones.
            self._refuse(408 if self._head_bytes else 0, _HEAD)
        elif phase == _BODY:
            self._refuse(0, _BODY)  # its answer is sent already

    def _refuse(self, status: int, reason: str) -> None:
        """Answer `status` (0: none) and close the connection, after the answer to an earlier
        request if one is still being made (pipelined requests)."""
        client = self.client[0] if self.client else None
        log.warning("http_refused", status=status or None, reason=reason, client=client)
        self._refused = True
        self._no_deadline()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # An earlier request's answer is being made (pipelining): on_response_complete
            # closes the connection after it, without the requests waiting behind it.
            self.flow.pause_reading()
            return
        if status:
            self.transport.write(self._answer(status, reason))
        self._linger()

    def close_after_answer(self) -> None:
        """uvicorn closes the connection after an answer (`connection: close`, an error)."""
        if self._in_head or self._refused or self.transport.is_closing():
            self.transport.close()  # the request was all read: nothing to drain
        else:  # refused before its body was all read (by the app): drain what still comes
            self._refused = True
            self._linger()

    def _linger(self) -> None:
        self._no_deadline()
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()  # uvicorn pauses it while the app has not read a body
            self._deadline(_LINGER, LINGER_SECONDS)
        else:  # TLS cannot half-close
            transport.close()

    def _answer(self, status: int, reason: str) -> bytes:
        limits = self.limits
        if reason == _HEAD:
            seconds = limits.header_timeout
            detail = f"the request line and headers did not arrive within {seconds:g}s"
        elif reason == "too_many_headers":
            detail = f"the request has more than {limits.max_headers} header fields"
        else:
            detail = f"the request line and headers exceed {limits.max_header_bytes} bytes"
        code = http.HTTPStatus(status).phrase.lower().replace(" ", "_")
        body = orjson.dumps(
            {
                "type": f"urn:assessment-gateway:error:{code}",
                "title": code.replace("_", " "),
                "status": status,
                "detail": detail,
            }
        )
        head = [STATUS_LINE[status]]
        defaults = self.server_state.default_headers
        head += [name + b": " + value + b"\r\n" for name, value in defaults]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        return b"".join(head) + body


def http_protocol(server: ServerSettings) -> type[asyncio.Protocol]:
    """The protocol uvicorn builds for every connection, with `server`'s limits. A partial, not
    a class made at run time: uvicorn pickles it into its worker processes."""
    factory = functools.partial(GatewayHttpProtocol, limits=HeadLimits.of(server))
    # uvicorn only calls it, with the keyword arguments of a protocol class.
    return cast("type[asyncio.Protocol]", factory)


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """What `gateway serve` and `gateway dev` give uvicorn besides the app and the address."""
    return {
        "http": http_protocol(server),
        # X-Forwarded-For and X-Forwarded-Proto are the client's to write: trusted only from
        # the proxies the operator lists (uvicorn would trust loopback by default).
        "proxy_headers": bool(server.forwarded_allow_ips),
        "forwarded_allow_ips": list(server.forwarded_allow_ips),
        "access_log": False,  # the gateway writes its own line per request
        "log_level": "warning",
    }


def listen(host: str, port: int, admin_port: int) -> list[socket.socket]:
    """The public socket and, unless `admin_port` is 0, the admin socket, bound on `host`;
    ConfigError naming the setting when either cannot be."""
    if not 0 <= admin_port <= 65535:
        raise ConfigError(f"server.admin_port must be 0 (none) or a port, not {admin_port}")
    if admin_port == port:
        raise ConfigError(
            f"server.admin_port ({admin_port}) must differ from the public port: the public port "
            "answers vendor routes only"
        )
    sockets = [_bind(host, port, "server.port")]
    if admin_port:
        try:
            sockets.append(_bind(host, admin_port, "server.admin_port"))
        except ConfigError:
            sockets[0].close()
            raise
    return sockets


def _bind(host: str, port: int, setting: str) -> socket.socket:
    """A socket bound as uvicorn binds its own (`Config.bind_socket`), inheritable by workers.

    Its protocol is named (IPPROTO_TCP, not 0): the connections it accepts inherit it, and
    asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are TCP.
    With it on, an answer written as head then body waited for the client's delayed ACK (40 ms
    on Linux) before its body left."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        raise ConfigError(f"cannot listen on {host}:{port} ({setting}): {reason}") from None
    sock.set_inheritable(True)
    return sock


class GatewayServer(Server):
    """uvicorn's server for one process (`gateway dev`), on the public and the admin port."""

    def __init__(self, config: Config, admin_port: int) -> None:
        super().__init__(config)
        self.admin_port = admin_port

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:
            sockets = listen(self.config.host, self.config.port, self.admin_port)
        await super().serve(sockets)


def serve(config: Config, server: ServerSettings) -> None:
    """Run `gateway serve`: bind both ports here, then serve them in this process or, with
    several workers, in worker processes that share the sockets and count their metrics in one
    directory."""
    _metrics_directory(server.state_dir, config.workers)
    sockets = listen(config.host, config.port, server.admin_port)
    if config.workers > 1:
        Multiprocess(config, sockets=sockets).run()
    else:
        Server(config).run(sockets=sockets)


def _metrics_directory(state_dir: str, workers: int) -> None:
    """Set up prometheus-client's multiprocess mode for `workers` processes (none for one)."""
    if workers == 1:
        # One process counts in memory; a value inherited from the environment would make it
        # add up the files of some other run.
        os.environ.pop(METRICS_DIR_ENV, None)
        return
    directory = Path(state_dir).resolve() / "metrics"
    directory.mkdir(parents=True, exist_ok=True)
    # A previous run's files would be summed into this one's: counters start again from 0, as
    # they do after the restart of a single process.
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[METRICS_DIR_ENV] = str(directory)
