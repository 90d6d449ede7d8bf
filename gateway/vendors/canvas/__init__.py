"""Canvas LMS quiz submission events: the POST Canvas's quiz page and canvasapi send, a bearer
token or an `access_token` parameter, answered as Canvas answers; and the quiz log, the read model
behind the GETs canvasapi walks through to read them back. See docs/vendors/canvas.md.
"""

from __future__ import annotations

from typing import Final

from gateway.auth.bearer import BearerOrAccessToken
from gateway.vendors.base import Component, ComponentContext, Reply, Vendor, redact_form_fields
from gateway.vendors.canvas import normalize
from gateway.vendors.canvas.settings import SECTION


def quiz_log(context: ComponentContext) -> Component:
    """The quiz log (not started); its module, and the topic follower it uses, are imported
    when the app builds it, not with the normalizer."""
    from gateway.vendors.canvas.quiz_log import CanvasQuizLog  # noqa: PLC0415  # see docstring

    return CanvasQuizLog(context.settings)


VENDOR: Final = Vendor(
    name=normalize.NAME,
    path=normalize.PATH,
    verifier=BearerOrAccessToken,
    schema_file="canvas.schema.json",
    envelope_schema=normalize.BATCH_SCHEMA,
    item_schemas=(normalize.EVENT_SCHEMA, normalize.FLAT_EVENT_SCHEMA),
    decode=normalize.decode,
    split=normalize.split,
    normalize=normalize.normalize,
    success=Reply(204),
    render_error=normalize.render_error,
    redact_body=redact_form_fields("access_token"),
    media_types=("application/json", "application/x-www-form-urlencoded"),
    doc="docs/vendors/canvas.md",
    settings=SECTION,
    component=quiz_log,
)
