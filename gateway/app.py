"""The Starlette application: routes from the vendor registry, the operational endpoints and the
lifespan that starts and flushes the Kafka producer. `create_app` builds everything, nothing is
built at import time.

The vendors' routes only translate: a Starlette request becomes the pipeline's `Head` and a
reader of its body, the pipeline's `Reply` a response with the request's `X-Request-Id`. Every
step between (admission, the body, authentication, ... the reply, its log line) is the
pipeline's (gateway/pipeline.py). So are the router's own answers, a path no route has (404) and
a method a route does not take (405), turned into the gateway's errors here and answered like
any other (gateway/boundary.py).

The operational endpoints (/healthz, /readyz, /metrics, /openapi.json) answer on the admin port
only (`server.admin_port`), the vendor routes on every other port only: the server listens on
both (gateway/http_server.py) and each request goes by the local port it arrived on. What one
port does not serve is the same 404 as any unknown path.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, ExceptionHandler, Receive, Scope, Send

from gateway import __version__
from gateway.admission import Admission
from gateway.errors import BodyCut, GatewayError, MethodNotAllowed, NotFound
from gateway.http_server import METRICS_DIR_ENV
from gateway.kafka.publisher import Publisher
from gateway.observability import Metrics, configure_logging
from gateway.pipeline import Head, Pipeline, Take
from gateway.settings import Settings, load_settings
from gateway.tracing import build_tracer
from gateway.vendors import registry
from gateway.vendors.base import (
    Component,
    ComponentContext,
    ExtraRoute,
    Inbound,
    Reply,
    Vendor,
)

if TYPE_CHECKING:  # tracing is an optional extra: never imported unless it is enabled
    from opentelemetry.sdk.trace.export import SpanExporter

# The collector's thresholds for a serving process (measured in bench/RESULTS.md). With the default
# 700, a young collection ran every few requests and a full one (55 ms with this heap) every second
# or so under load, which set the p99. What start-up built lives as long as the process: frozen, it
# is never traversed again.
_GC_THRESHOLDS: Final = (10_000, 20, 20)
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# RFC 4122's version 4 and variant bits, as `uuid.UUID(..., version=4)` sets them.
_UUID_CLEAR: Final = ~((0xC000 << 48) | (0xF000 << 64))
_UUID4_SET: Final = (0x8000 << 48) | (4 << 76)
# Starlette's answer to an exception (ServerErrorMiddleware's, not in debug mode).
_SERVER_ERROR: Final = PlainTextResponse("Internal Server Error", status_code=500)
# Stands for a request id in the answers made ahead (`_Answers`).
_PLACEHOLDER: Final = "request-id"
# The query parameters of a request without any: one immutable, empty mapping for all of them.
_NO_QUERY: Final = QueryParams(b"")

log = structlog.get_logger("gateway")

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(
    settings: Settings | None = None, *, span_exporter: SpanExporter | None = None
) -> Starlette:
    """Build the gateway for `settings` (default: read from the environment, see settings.py).
    `span_exporter` replaces the OTLP exporter when tracing is enabled (tests)."""
    settings = settings or load_settings()
    configure_logging(settings.logging)
    tracer = build_tracer(settings.tracing, span_exporter)
    vendors = registry()
    publisher = Publisher(settings.kafka, settings.server, settings.spool, tracer=tracer)
    admission = Admission(settings.server, settings.rate_limit)
    # Set (by `gateway serve`) in worker processes of a server with several.
    metrics = Metrics(publisher, admission.in_flight, os.environ.get(METRICS_DIR_ENV))
    publisher.on_published = metrics.observe_publish
    pipeline = Pipeline.for_settings(
        settings, publisher, admission=admission, metrics=metrics, tracer=tracer
    )
    pipeline.prepare(list(vendors.values()))
    # Each vendor's stateful part, built (not started) here: see Component.
    ingest = [route for vendor in vendors.values() for route in vendor.ingest_routes]
    components = [
        route.component(ComponentContext(settings, pipeline))
        for route in ingest
        if route.component is not None
    ]
    for component in components:
        pipeline.on_accepted(component.vendor, component.accepted)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await publisher.start()
        for component in components:
            await component.start()
        refresher = None
        if metrics.multiprocess_dir:
            refresher = asyncio.create_task(metrics.keep_refreshed())
        gc.collect()
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLDS)
        log.info(
            "started",
            version=__version__,
            kafka=settings.kafka.bootstrap_servers,
            topics=[settings.kafka.canonical_topic, settings.kafka.deadletter_topic],
            vendors=sorted(vendors),
        )
        try:
            yield
        finally:
            for component in reversed(components):
                await component.stop()
            await publisher.stop()
            if refresher is not None:
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
            metrics.close()
            await asyncio.to_thread(tracer.shutdown)  # exports the spans still buffered
            log.info("stopped")

    admin_port = settings.server.admin_port
    operational = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readyz(publisher), methods=["GET"]),
        Route("/metrics", _metrics(metrics), methods=["GET"]),
        Route(
            "/openapi.json",
            _openapi(openapi_document(vendors, components, settings, operational=not admin_port)),
            methods=["GET"],
        ),
    ]
    routes, fast = _vendor_routes(pipeline, vendors, ingest, components, settings)
    # The router's own answers (no route for the path, or not for the method), on either port.
    unrouted: dict[Any, ExceptionHandler] = dict.fromkeys((404, 405), _unrouted(pipeline))
    # The vendors' ingest routes are found before Starlette's stack (see _Gateway).
    successes = [vendor.success for vendor in ingest]
    if not admin_port:  # one port for everything, as before the admin port existed
        return _Gateway(
            ingest=fast,
            replies=successes,
            admin_port=admin_port,
            routes=operational + routes,
            lifespan=lifespan,
            exception_handlers=unrouted,
        )
    admin_app = Starlette(routes=operational, exception_handlers=unrouted)
    admin = Middleware(_AdminPort, admin=admin_app, port=admin_port)
    return _Gateway(
        ingest=fast,
        replies=successes,
        admin_port=admin_port,
        routes=routes,
        lifespan=lifespan,
        middleware=[admin],
        exception_handlers=unrouted,
    )


def _vendor_routes(
    pipeline: Pipeline,
    vendors: Mapping[str, Vendor],
    ingest: Sequence[Vendor],
    components: Sequence[Component],
    settings: Settings,
) -> tuple[list[Route], list[tuple[Route, Take | None]]]:
    """The public port's routes in the router's order, and what `_Gateway` may take before the
    router: the ingest routes, after the components' POST routes (given no function: the
    router's to serve)."""
    # A component's routes come first: a component may serve its vendor's own POST route when
    # the answer depends on the request (ids it assigned, a conflict with what it accepted),
    # which the vendor's static `success` cannot say.
    routes: list[Route] = []
    extras = [extra for component in components for extra in component.routes()]
    extras += [_describe(vendor, settings) for vendor in vendors.values() if vendor.describe]
    for extra in extras:
        endpoint = _extra(pipeline.extra_route(vendors[extra.vendor], extra))
        routes.append(Route(extra.path, endpoint, methods=[extra.method]))
    fast: list[tuple[Route, Take | None]] = [
        (route, None) for route in routes if route.methods and "POST" in route.methods
    ]
    for vendor in ingest:
        take = pipeline.ingest_route(vendor)
        route = Route(vendor.path, _ingest(take), methods=["POST"])
        routes.append(route)
        fast.append((route, take))
    return routes, fast


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (used by `gateway serve`, one call per worker)."""
    return create_app()


class _AdminPort:
    """Sends the requests that arrived on the admin port to the operational endpoints' app; the
    rest (and the lifespan) to the vendors' routes. The same 404 either way for a path the port
    does not serve, so a public port tells nothing about what the admin port has."""

    def __init__(self, app: ASGIApp, *, admin: ASGIApp, port: int) -> None:
        self.app = app
        self.admin = admin
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")  # the local address of the connection
        if scope["type"] == "http" and server is not None and server[1] == self.port:
            await self.admin(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Gateway(Starlette):
    """The app: Starlette, whose vendors' ingest routes (POST) are taken before its middleware,
    router and request objects. A request the router would give one of them goes to it
    straight from the scope, with the same head and the same answer as through the router
    (`_ingest`), for a tenth or so of what a request costs (bench/RESULTS.md); everything else
    (the operational endpoints, the extra routes, a method or a path no route takes, the
    lifespan) goes through Starlette as before.

    What Starlette's stack does for such a request is done here too: a request to the admin
    port is never taken (`_AdminPort` sends it to the operational endpoints), an exception is
    answered with Starlette's own 500 (`ServerErrorMiddleware`) unless the answer had begun,
    then raised to the server. Routes are tried in the router's order, an exact path by string,
    one with parameters by Starlette's own matching (`Route.matches`); the operational
    endpoints, listed before them, take GET only, and the components' POST routes, listed before
    them too, are given here with no function (the router serves them), so for a POST the first
    route to match is the router's choice too. A `root_path` (an app mounted under a prefix)
    goes to the router, which knows how to strip it."""

    def __init__(
        self,
        *,
        ingest: Sequence[tuple[Route, Take | None]],
        replies: Sequence[Reply],
        admin_port: int,
        **starlette: Any,
    ) -> None:
        super().__init__(**starlette)
        self._ingest = tuple(
            (None if "{" in route.path else route.path, route, take) for route, take in ingest
        )
        self._answers = _Answers(replies)
        self._admin_port = admin_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        take = self._take(scope) if scope["type"] == "http" else None
        if take is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = False
        try:
            head = _scope_head(scope)
            reply = await take(head, _body(receive))
            started = True
            await self._answers.send(reply, head.request_id, send)
        except Exception:
            if not started:
                await _SERVER_ERROR(scope, receive, send)
            raise

    def _take(self, scope: Scope) -> Take | None:
        """The ingest route's function for a request the router would give it, else None."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        server = scope.get("server")
        if self._admin_port and server is not None and server[1] == self._admin_port:
            return None
        path = scope["path"]
        for exact, route, take in self._ingest:
            if exact is not None:
                if exact == path:
                    return take  # None: a component's POST route, the router's to serve
                continue
            match, child = route.matches(scope)
            if match is Match.FULL:
                if take is not None:
                    scope.update(child)
                return take
        return None


class _Answers:
    """Sends a reply as `_response` makes it: for the replies given (the vendors' successes,
    the answer to almost every request), the messages are made once, with only the request id
    to fill in; any other reply is made by Starlette's Response each time."""

    def __init__(self, replies: Sequence[Reply]) -> None:
        self._made: dict[int, tuple[Reply, list[tuple[bytes, bytes]], int]] = {}
        for reply in replies:
            headers = _response(reply, _PLACEHOLDER).raw_headers
            at = headers.index((b"x-request-id", _PLACEHOLDER.encode()))
            self._made[id(reply)] = (reply, headers, at)

    async def send(self, reply: Reply, request_id: str, send: Send) -> None:
        made = self._made.get(id(reply))
        if made is None or made[0] is not reply:
            response = _response(reply, request_id)
            status, headers, body = response.status_code, response.raw_headers, response.body
        else:
            headers = made[1].copy()
            headers[made[2]] = (b"x-request-id", request_id.encode("latin-1"))
            status, body = reply.status, reply.body
        # What Starlette's Response.__call__ sends (no background task here).
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _ingest(take: Take) -> Endpoint:
    """A vendor's route: its request, translated for the pipeline, and the pipeline's reply.
    (Requests reach it through `_Gateway`, which does the same from the scope, only when
    the router is called without it.)"""

    async def endpoint(request: Request) -> Response:
        head = _head(request)
        return _response(await take(head, _body(request.receive)), head.request_id)

    return endpoint


def _extra(take: Take) -> Endpoint:
    """An extra route of a vendor: as `_ingest`, with the base URL its answers may link to (not
    free to build on every ingest request)."""

    async def endpoint(request: Request) -> Response:
        head = _head(request, str(request.base_url).rstrip("/"))
        return _response(await take(head, _body(request.receive)), head.request_id)

    return endpoint


def _describe(vendor: Vendor, settings: Settings) -> ExtraRoute:
    """A vendor's GET on its own route (an endpoint configuration), served like any other extra
    route: authenticated in the vendor's scheme, answered in its format."""
    assert vendor.describe is not None  # noqa: S101  # only routed for vendors that describe
    describe = vendor.describe

    async def handler(_: Inbound, __: str) -> Reply:
        return describe(settings)

    return ExtraRoute(vendor.name, vendor.path, "GET", handler)


def _unrouted(pipeline: Pipeline) -> ExceptionHandler:
    """The router's 404 (no route for the path) and 405 (none for the method: `Allow` says
    which), answered and logged by the pipeline like any other request."""

    async def handler(request: Request, exc: Exception) -> Response:
        request_id = _request_id(request.headers)
        error: GatewayError = NotFound("no such route")
        route = None
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            error = MethodNotAllowed("the route does not take this method", allow)
            route = getattr(request.scope.get("route"), "path", None)
        reply = pipeline.unrouted(request.method, request_id, error, route)
        return _response(reply, request_id)

    return handler


def _head(request: Request, base_url: str = "") -> Head:
    """What the pipeline sees of a request before its body."""
    client = request.scope.get("client")  # the TCP peer: Starlette's `request.client` builds one
    return Head(
        request.method,
        request.headers,
        request.query_params,
        request.path_params,
        client[0] if client else "unknown",
        _request_id(request.headers),
        base_url,
    )


def _scope_head(scope: Scope) -> Head:
    """`_head` of a request to an ingest route, made from its scope: the same mappings as
    Starlette's request gives (its headers, looked up faster; its query parameters, parsed only
    when there are some), without building the request."""
    headers = _Headers(scope)
    query = scope["query_string"]
    client = scope.get("client")
    return Head(
        scope["method"],
        headers,
        QueryParams(query) if query else _NO_QUERY,
        scope.get("path_params", {}),
        client[0] if client else "unknown",
        _request_id(headers),
    )


class _Headers(Headers):
    """Starlette's headers of a request, whose lookups go through a dict of each name's first
    value (what Starlette's lookups find, walking every header each time). The rest (`raw`,
    `items`, `getlist`, ...) is Starlette's own."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(scope=scope)
        first: dict[bytes, bytes] = {}
        for key, value in reversed(self._list):
            first[key] = value
        self._first = first

    def __getitem__(self, key: str) -> str:
        value = self._first.get(key.lower().encode("latin-1"))
        if value is None:
            raise KeyError(key)
        return value.decode("latin-1")

    def __contains__(self, key: Any) -> bool:
        return key.lower().encode("latin-1") in self._first

    def get(self, key: str, default: Any = None) -> Any:
        value = self._first.get(key.lower().encode("latin-1"))
        return default if value is None else value.decode("latin-1")


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The body's chunks as the server hands them over (Starlette's `Request.stream`, without
    its bookkeeping); BodyCut when the client hangs up before the end."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BodyCut
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _response(reply: Reply, request_id: str) -> Response:
    headers = {**reply.headers, "x-request-id": request_id}
    return Response(reply.body, reply.status, headers=headers, media_type=reply.media_type)


def _request_id(headers: Mapping[str, str]) -> str:
    """The sender's X-Request-Id when it is a sane one, else a new random (version 4) UUID's
    32 hex digits."""
    given = headers.get("x-request-id", "")
    if given and _REQUEST_ID.match(given):
        return given
    # uuid.uuid4().hex without the UUID object (its checks cost more than the random bytes).
    number = int.from_bytes(_random_bytes()) & _UUID_CLEAR | _UUID4_SET
    return f"{number:032x}"


class _RandomBytes:
    """16 bytes from `os.urandom` at a time, read from it 4 KiB at a time: a system call per
    request cost more than the rest of its id (they are dear on a VM). Each id still has 16
    bytes of its own, from the operating system's generator."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        # A forked process must not hand out the bytes its parent hands out too.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> bytes:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        return self._pool[at : at + 16]


_random_bytes: Final = _RandomBytes()


async def _healthz(_: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def _readyz(publisher: Publisher) -> Endpoint:
    """200 while the gateway can take events safely: Kafka answers (`ready`) or, while it does
    not, the spool has room (`degraded`); 503 when neither (`unavailable`)."""

    async def endpoint(_: Request) -> Response:
        status = await publisher.ready()
        body: dict[str, Any] = {"status": status}
        if publisher.spool is not None:
            body["spool_depth"] = publisher.spool.depth
        code = 503 if status == "unavailable" else 200
        return Response(orjson.dumps(body), code, media_type="application/json")

    return endpoint


def _metrics(metrics: Metrics) -> Endpoint:
    async def endpoint(_: Request) -> Response:
        metrics.refresh()
        if metrics.multiprocess_dir:  # reads every worker's files: off the event loop
            body = await asyncio.to_thread(metrics.render)
        else:
            body = metrics.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return endpoint


def _openapi(document: dict[str, Any]) -> Endpoint:
    body = orjson.dumps(document)

    async def endpoint(_: Request) -> Response:
        return Response(body, media_type="application/json")

    return endpoint


def openapi_document(
    vendors: dict[str, Vendor],
    components: Sequence[Component] = (),
    settings: Settings | None = None,
    *,
    operational: bool = True,
) -> dict[str, Any]:
    """An OpenAPI 3.1 description of the routes senders call: the vendors' routes, at
    `server.public_url` when it is set. The operational endpoints only when `operational` (they
    share the vendors' port, `server.admin_port = 0`): a document served on the admin port
    describing them would send a client to the public port for them."""
    paths: dict[str, Any] = {}
    for vendor in (route for named in vendors.values() for route in named.ingest_routes):
        operations: dict[str, Any] = {
            "post": {
                "summary": vendor.summary or f"Ingest {vendor.name} events",
                "tags": [vendor.name],
                "requestBody": {
                    "required": True,
                    "content": {media: {} for media in vendor.media_types},
                },
                "parameters": _path_parameters(vendor.path),
                "responses": {
                    str(vendor.success.status): {
                        "description": "accepted and acknowledged by Kafka"
                    },
                    "400": {"description": "malformed payload, or over a safety limit"},
                    "401": {"description": "missing or invalid credentials"},
                    "408": {"description": "the body did not arrive in time"},
                    "413": {"description": "body over the size limit"},
                    "415": {"description": "unsupported content type"},
                    "422": {"description": "unsupported version"},
                    "503": {"description": "Kafka unavailable; retry after Retry-After"},
                },
            }
        }
        if vendor.describe is not None:
            operations["get"] = {
                "summary": f"{vendor.name} endpoint configuration",
                "tags": [vendor.name],
                "responses": {
                    "200": {"description": "configuration"},
                    "401": {"description": "unauthorized"},
                },
            }
        paths[vendor.path] = operations
    for component in components:
        for extra in component.routes():
            paths.setdefault(extra.path, {})[extra.method.lower()] = {
                "summary": f"{extra.vendor}: {extra.handler.__doc__ or extra.path}".strip(),
                "tags": [extra.vendor],
                "parameters": _path_parameters(extra.path),
                "responses": {
                    status: {"description": meaning}
                    for status, meaning in (extra.responses or _EXTRA_RESPONSES).items()
                },
            }
    for path, summary in (
        ("/healthz", "the process is up"),
        ("/readyz", "200 while events are taken safely (ready or degraded), else 503"),
        ("/metrics", "Prometheus metrics"),
        ("/openapi.json", "this document"),
    ):
        if operational:
            answers = {"200": {"description": "ok"}}
            paths[path] = {"get": {"summary": summary, "responses": answers}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "assessment-gateway", "version": __version__},
        "paths": paths,
    }
    if settings is not None and settings.server.public_url:
        document["servers"] = [{"url": settings.server.public_url}]
    return document


_EXTRA_RESPONSES: Final = {
    "200": "ok",
    "401": "missing or invalid credentials",
    "404": "unknown resource",
}


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
