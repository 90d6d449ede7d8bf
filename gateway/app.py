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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
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
    # A component's routes come first: a component may serve its vendor's own POST route when
    # the answer depends on the request (ids it assigned, a conflict with what it accepted),
    # which the vendor's static `success` cannot say.
    routes: list[Route] = []
    extras = [extra for component in components for extra in component.routes()]
    extras += [_describe(vendor, settings) for vendor in vendors.values() if vendor.describe]
    for extra in extras:
        endpoint = _extra(pipeline.extra_route(vendors[extra.vendor], extra))
        routes.append(Route(extra.path, endpoint, methods=[extra.method]))
    routes += [
        Route(vendor.path, _ingest(pipeline.ingest_route(vendor)), methods=["POST"])
        for vendor in ingest
    ]
    # The router's own answers (no route for the path, or not for the method), on either port.
    unrouted: dict[Any, ExceptionHandler] = dict.fromkeys((404, 405), _unrouted(pipeline))
    if not admin_port:  # one port for everything, as before the admin port existed
        return Starlette(
            routes=operational + routes, lifespan=lifespan, exception_handlers=unrouted
        )
    admin_app = Starlette(routes=operational, exception_handlers=unrouted)
    admin = Middleware(_AdminPort, admin=admin_app, port=admin_port)
    return Starlette(
        routes=routes, lifespan=lifespan, middleware=[admin], exception_handlers=unrouted
    )


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


def _ingest(take: Take) -> Endpoint:
    """A vendor's route: its request, translated for the pipeline, and the pipeline's reply."""

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
        request_id = _request_id(request)
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
        _request_id(request),
        base_url,
    )


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


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


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
