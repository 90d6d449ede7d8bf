"""Canvas LMS: quiz submission events, the POST Canvas's quiz page and canvasapi send, a bearer
token or an `access_token` parameter, answered as Canvas answers, with the quiz log, the read
model behind the GETs canvasapi walks through to read them back; and Canvas Live Events, what
Canvas Data Services pushes over HTTPS (signed JWTs, or JSON with a token), a feed of the same
vendor on `POST /v1/canvas/live-events`. See docs/vendors/canvas.md.
"""

from __future__ import annotations

from typing import Final

from gateway.auth.bearer import BearerOrAccessToken
from gateway.canonical import CanonicalEvent, NormalizeContext
from gateway.vendors.base import (
    Commands,
    Component,
    ComponentContext,
    Item,
    Reply,
    Vendor,
    redact_form_fields,
)
from gateway.vendors.canvas import live_events, normalize
from gateway.vendors.canvas.dev import SIGN_LIVE_EVENT, dev_jwks
from gateway.vendors.canvas.settings import SECTION


def quiz_log(context: ComponentContext) -> Component:
    """The quiz log (not started); its module, and the topic follower it uses, are imported
    when the app builds it, not with the normalizer."""
    from gateway.vendors.canvas.quiz_log import CanvasQuizLog  # noqa: PLC0415  # see docstring

    return CanvasQuizLog(context.settings)


def live_event_keys(context: ComponentContext) -> Component:
    """The Live Events verifier's key cache, which the app starts (fetch, then keep fresh)."""
    verifier = context.pipeline.verifier(LIVE_EVENTS)
    assert isinstance(verifier, live_events.LiveEventsJwt)  # noqa: S101  # built from LIVE_EVENTS
    return verifier.keys


def any_item(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """Either route's item: what `gateway replay` hands back of a dead letter is normalized by
    the normalizer of the route it came from (a Live Event's item says its format)."""
    if item.meta.get("format") in live_events.FORMATS:
        return live_events.normalize(item, ctx)
    return normalize.normalize(item, ctx)


LIVE_EVENTS: Final = Vendor(
    name=normalize.NAME,
    path=live_events.PATH,
    verifier=live_events.LiveEventsJwt,
    schema_file="canvas.schema.json",
    item_schemas=(live_events.LIVE_EVENT_SCHEMA,),
    decode=live_events.decode,
    split=live_events.split,
    normalize=live_events.normalize,
    # Canvas redelivers anything but a 2xx: 200 only once Kafka has the record.
    success=Reply(200),
    # Canvas sends the JWT with a content type of its choosing.
    media_types=("application/jwt", "application/json", "text/plain"),
    summary="Ingest Canvas Live Events (Canvas Data Services over HTTPS)",
    doc="docs/vendors/canvas.md#live-events",
    personal_keys=live_events.PERSONAL_KEYS,
    component=live_event_keys,
)

VENDOR: Final = Vendor(
    name=normalize.NAME,
    path=normalize.PATH,
    verifier=BearerOrAccessToken,
    schema_file="canvas.schema.json",
    envelope_schema=normalize.BATCH_SCHEMA,
    item_schemas=(normalize.EVENT_SCHEMA, normalize.FLAT_EVENT_SCHEMA),
    decode=normalize.decode,
    split=normalize.split,
    normalize=any_item,
    success=Reply(204),
    render_error=normalize.render_error,
    redact_body=redact_form_fields("access_token"),
    media_types=("application/json", "application/x-www-form-urlencoded"),
    doc="docs/vendors/canvas.md",
    settings=SECTION,
    component=quiz_log,
    personal_keys=live_events.PERSONAL_KEYS,
    feeds=(LIVE_EVENTS,),
    commands=Commands(help="Canvas Live Events, dev configuration", commands=(SIGN_LIVE_EVENT,)),
    dev_service=dev_jwks,
)
