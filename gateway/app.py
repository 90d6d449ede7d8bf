"""The Starlette application: routes from the vendor registry, the operational endpoints and the
lifespan that starts and flushes the Kafka producer. Routes only translate HTTP to the pipeline
and errors back; `create_app` builds everything, nothing is built at import time.

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
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import orjson
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import __version__
from gateway.errors import (
    GatewayError,
    MalformedPayload,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from gateway.http_server import METRICS_DIR_ENV, BodyDeadlines
from gateway.limits import FORM, check_form, check_head
from gateway.observability import InFlight, Metrics, Unverified, configure_logging
from gateway.pipeline import Pipeline, RequestStats
from gateway.publisher import Publisher
from gateway.ratelimit import RateLimited, RateLimiter
from gateway.settings import Settings, load_settings
from gateway.tracing import NO_TRACER, Span, Tracer, build_tracer
from gateway.vendors import registry
from gateway.vendors.base import (
    Component,
    ComponentContext,
    ExtraRoute,
    Inbound,
    Reply,
    Vendor,
    problem_reply,
)

if TYPE_CHECKING:  # tracing is an optional extra: never imported unless it is enabled
    from opentelemetry.sdk.trace.export import SpanExporter

RETRY_AFTER_SECONDS: Final = "5"
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
    pipeline = Pipeline.for_settings(settings, publisher)
    pipeline.prepare(list(vendors.values()))
    in_flight = InFlight(settings.server.max_in_flight)
    # Set (by `gateway serve`) in worker processes of a server with several.
    metrics = Metrics(publisher, in_flight, os.environ.get(METRICS_DIR_ENV))
    publisher.on_published = metrics.observe_publish
    guard = _Guard(metrics, RateLimiter(settings.rate_limit), pipeline, settings)
    # Each vendor's stateful part, built (not started) here: see Component.
    components = [
        vendor.component(ComponentContext(settings, pipeline))
        for vendor in vendors.values()
        if vendor.component is not None
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
    routes: list[Route] = []
    for vendor in vendors.values():
        routes.append(
            Route(
                vendor.path,
                _ingest(vendor, pipeline, settings, metrics, in_flight, tracer=tracer, guard=guard),
                methods=["POST"],
            )
        )
    extras = [extra for component in components for extra in component.routes()]
    extras += [_describe(vendor, settings) for vendor in vendors.values() if vendor.describe]
    for extra in extras:
        endpoint = _extra(vendors[extra.vendor], extra, guard)
        routes.append(Route(extra.path, endpoint, methods=[extra.method]))
    if not admin_port:  # one port for everything, as before the admin port existed
        return Starlette(routes=operational + routes, lifespan=lifespan)
    admin = Middleware(_AdminPort, admin=Starlette(routes=operational), port=admin_port)
    return Starlette(routes=routes, lifespan=lifespan, middleware=[admin])


def create_app_from_env() -> Starlette:
    """Factory for `uvicorn --factory` (used by `gateway serve`, one call per worker)."""
    return create_app()


class _AdminPort:
    """Sends the requests that arrived on the admin port to the operational endpoints' app; the
    rest (and the lifespan) to the vendors' routes. Starlette's 404 either way for a path the
    port does not serve, so a public port tells nothing about what the admin port has."""

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


def _ingest(
    vendor: Vendor,
    pipeline: Pipeline,
    settings: Settings,
    metrics: Metrics,
    in_flight: InFlight,
    *,
    tracer: Tracer,
    guard: _Guard,
) -> Endpoint:
    traced = tracer is not NO_TRACER
    vendor_attribute = {"gateway.vendor": vendor.name}

    async def endpoint(request: Request) -> Response:
        with tracer.request_span(vendor.path, request.headers, **vendor_attribute) as span:
            return await handle(request, span)

    async def handle(request: Request, span: Span) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request)
        stats = RequestStats()
        error_code = None
        inbound = None
        taken = False  # a request refused before it was taken is answered with `close`
        try:
            media, tenant = guard.head(vendor, request)
            if tenant is None:  # only the body proves who sent it: read in the unverified pool
                inbound, tenant = await guard.verify(vendor, request, media)
            stats.tenant = tenant
            guard.limiter.take(tenant, vendor.name)
            with in_flight:
                if inbound is None:
                    inbound = await guard.read(vendor, request, media)
                taken = True
                reply = await pipeline.ingest(vendor, inbound, request_id, stats, tenant)
        except GatewayError as error:
            error_code = error.code
            guard.refused(vendor, request, request_id, error)
            reply = _error_reply(vendor, error)
        except Exception:
            log.exception("request_failed", request_id=request_id, vendor=vendor.name)
            error_code = "internal_error"
            reply = problem_reply(GatewayError("the gateway failed to take this request"))
        elapsed = time.perf_counter() - started
        tenant = stats.tenant or "unknown"
        metrics.requests.labels(tenant, vendor.name, str(reply.status)).inc()
        metrics.latency.labels(vendor.name).observe(elapsed)
        for outcome, count in (
            ("published", stats.accepted),
            ("deadlettered", stats.deadlettered),
            ("duplicate", stats.duplicates),
            ("spooled", stats.spooled),
        ):
            if count:
                metrics.events.labels(tenant, vendor.name, outcome).inc(count)
        log.info(
            "request",
            request_id=request_id,
            method=request.method,
            route=vendor.path,
            vendor=vendor.name,
            tenant=stats.tenant,
            status=reply.status,
            error=error_code,
            accepted=stats.accepted,
            deadlettered=stats.deadlettered,
            duplicates=stats.duplicates,
            spooled=stats.spooled,
            latency_ms=round(elapsed * 1000, 3),
        )
        if traced:
            _annotate(span, request_id, reply.status, error_code, stats)
        return _response(reply, request_id, close=not taken)

    return endpoint


def _annotate(
    span: Span, request_id: str, status: int, error_code: str | None, stats: RequestStats
) -> None:
    """What a request came to, on its span: counts and codes, never content."""
    span.set("http.response.status_code", status)
    span.set("gateway.request_id", request_id)
    if stats.tenant:
        span.set("gateway.tenant", stats.tenant)
    span.set("gateway.events.accepted", stats.accepted)
    span.set("gateway.events.deadlettered", stats.deadlettered)
    span.set("gateway.events.duplicates", stats.duplicates)
    span.set("gateway.events.spooled", stats.spooled)
    if error_code:
        span.set("error.type", error_code)
    if status >= 500:  # OpenTelemetry's HTTP conventions: only server errors fail a server span
        span.fail(error_code or str(status))


def _describe(vendor: Vendor, settings: Settings) -> ExtraRoute:
    """A vendor's GET on its own route (an endpoint configuration), served like any other extra
    route: authenticated in the vendor's scheme, answered in its format."""
    assert vendor.describe is not None  # noqa: S101  # only routed for vendors that describe
    describe = vendor.describe

    async def handler(_: Inbound, __: str) -> Reply:
        return describe(settings)

    return ExtraRoute(vendor.name, vendor.path, "GET", handler)


def _extra(vendor: Vendor, extra: ExtraRoute, guard: _Guard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        request_id = _request_id(request)
        tenant = None
        taken = False
        try:
            media, tenant = guard.head(vendor, request)
            base_url = str(request.base_url).rstrip("/")
            if tenant is None:
                inbound, tenant = await guard.verify(vendor, request, media, base_url)
            else:
                inbound = await guard.read(vendor, request, media, base_url)
            taken = True
            reply = await extra.handler(inbound, tenant)
        except GatewayError as error:
            guard.refused(vendor, request, request_id, error)
            reply = _error_reply(vendor, error)
        except Exception:  # a bug: answered and logged like any other request, never a bare 500
            log.exception("request_failed", request_id=request_id, vendor=vendor.name)
            reply = _error_reply(vendor, GatewayError("the gateway failed to take this request"))
        log.info(
            "request",
            request_id=request_id,
            method=request.method,
            route=extra.path,
            vendor=vendor.name,
            tenant=tenant,
            status=reply.status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return _response(reply, request_id, close=not taken)

    return endpoint


class _Guard:
    """Around every vendor route: what is checked before a body is read, how it is read, and
    what a refused credential leaves behind (a counter and an `auth_failed` line, never the
    secret).

    In order: the client's failed-authentication limit (429), the head's framing (415, 413),
    the credential as far as the head shows it (401). A request the head proves is read in the
    slots of authenticated requests (`InFlight`, by the route); one whose credential only the
    body can prove is read and authenticated in a pool of its own (`Unverified`), bounded per
    client address. Every body is read within `server.body_timeout_seconds` (408)."""

    def __init__(
        self, metrics: Metrics, limiter: RateLimiter, pipeline: Pipeline, settings: Settings
    ) -> None:
        server = settings.server
        self.metrics = metrics
        self.limiter = limiter
        self.pipeline = pipeline
        self.limit = server.max_body_bytes
        self.deadlines = BodyDeadlines(server.body_timeout_seconds)
        retry_after = int(RETRY_AFTER_SECONDS)
        self.unverified = Unverified(
            server.max_unverified_in_flight, server.max_unverified_per_client, retry_after
        )

    def head(self, vendor: Vendor, request: Request) -> tuple[str, str | None]:
        """Everything checked before the body: its media type, and the tenant when the head
        proves the credential (None when only the body can)."""
        self.limiter.check_client(_client(request))
        headers = request.headers
        media = check_head(headers, self.limit)
        return media, self.pipeline.authenticate_head(vendor, headers, request.query_params, media)

    async def verify(
        self, vendor: Vendor, request: Request, media: str, base_url: str = ""
    ) -> tuple[Inbound, str]:
        """Read and authenticate a request whose credential only its body proves, in the
        unverified pool (503 when it is full, 429 when the client's share is)."""
        client = _client(request)
        self.unverified.take(client)
        try:
            inbound = _inbound(request, await self._body(request), media, base_url)
            return inbound, self.pipeline.authenticate(vendor, inbound)
        finally:
            self.unverified.release(client)

    async def read(
        self, vendor: Vendor, request: Request, media: str, base_url: str = ""
    ) -> Inbound:
        """Read a request its head proved. A form may hold a credential of its own (an
        `access_token`): the whole request is authenticated again, so that two credentials
        that disagree are refused as they are without the head's check."""
        inbound = _inbound(request, await self._body(request), media, base_url)
        if media == FORM:
            self.pipeline.authenticate(vendor, inbound)
        return inbound

    async def _body(self, request: Request) -> bytes:
        """The body, refused as soon as it is known to exceed the size limit (the declared
        length was checked with the head; here, while streaming) or to take longer than the
        body timeout (see gateway.limits and gateway.http_server)."""
        limit = self.limit
        deadlines = self.deadlines
        chunks: list[bytes] = []
        size = 0
        task = deadlines.start()
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
                chunks.append(chunk)
        except ClientDisconnect:  # fewer bytes than Content-Length said, then the client hung up
            raise MalformedPayload("the connection closed before the whole body arrived") from None
        except asyncio.CancelledError:
            if deadlines.stop(task):
                seconds = deadlines.seconds
                raise RequestTimeout(f"the body did not arrive within {seconds:g}s") from None
            raise
        finally:
            deadlines.stop(task)
        return b"".join(chunks)

    def refused(
        self, vendor: Vendor, request: Request, request_id: str, error: GatewayError
    ) -> None:
        """Account for a refused request: failed authentications are counted and logged."""
        if not isinstance(error, Unauthorized):
            return
        client = _client(request)
        self.limiter.failed(client)
        self.metrics.auth_failures.labels(vendor.name).inc()
        # `reason` is the gateway's own message: it never quotes what the sender presented.
        log.warning(
            "auth_failed",
            request_id=request_id,
            vendor=vendor.name,
            reason=error.message,
            client=client,
        )


def _client(request: Request) -> str:
    # The TCP peer: X-Forwarded-For is whatever the sender wants it to be.
    return request.client.host if request.client else "unknown"


def _error_reply(vendor: Vendor, error: GatewayError) -> Reply:
    reply = vendor.render_error(error)
    if isinstance(error, RateLimited):
        headers = {**reply.headers, "retry-after": str(error.retry_after)}
        reply = Reply(reply.status, reply.body, reply.media_type, headers)
    elif error.retryable:
        reply = Reply(
            reply.status,
            reply.body,
            reply.media_type,
            {**reply.headers, "retry-after": RETRY_AFTER_SECONDS},
        )
    return reply


def _response(reply: Reply, request_id: str, *, close: bool = False) -> Response:
    """`close`: the request was refused before it was taken, maybe before its body was read.
    The connection is not kept: what is left of the body is never read."""
    headers = {**reply.headers, "x-request-id": request_id}
    if close:
        headers["connection"] = "close"
    return Response(reply.body, reply.status, headers=headers, media_type=reply.media_type)


def _request_id(request: Request) -> str:
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex


def _inbound(request: Request, body: bytes, media_type: str, base_url: str = "") -> Inbound:
    """What vendors see of a request. `base_url` only where answers hold absolute links: it is
    not free to build on every ingest request."""
    check_form(media_type, body)  # before anything (auth included) parses it
    return Inbound(
        method=request.method,
        media_type=media_type,
        body=body,
        headers=request.headers,
        query=request.query_params,
        path_params={k: str(v) for k, v in request.path_params.items()},
        base_url=base_url,
    )


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
    for vendor in vendors.values():
        operations: dict[str, Any] = {
            "post": {
                "summary": f"Ingest {vendor.name} events",
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
                    "200": {"description": "ok"},
                    "401": {"description": "missing or invalid credentials"},
                    "404": {"description": "unknown resource"},
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


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
    ]
