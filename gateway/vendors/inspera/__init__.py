"""Inspera Assessment: webhooks signed with `X-Inspera-Signature`, the test-events exports they
announce (downloaded and ingested in the background), and `gateway inspera export`, which orders
one through Inspera's API. See docs/vendors/inspera.md.
"""

from __future__ import annotations

from typing import Final

from gateway.vendors.base import Component, ComponentContext, Reply, Vendor, redact_url_queries
from gateway.vendors.inspera import normalize
from gateway.vendors.inspera.commands import COMMANDS
from gateway.vendors.inspera.settings import SECTION
from gateway.vendors.inspera.signature import InsperaHmacSha1


def exports(context: ComponentContext) -> Component:
    """The export downloads (not started); their module, with its HTTP client, is imported when
    the app builds it, not with the normalizer."""
    from gateway.vendors.inspera.exports import InsperaComponent  # noqa: PLC0415  # see docstring

    return InsperaComponent(context.settings, context.pipeline)


VENDOR: Final = Vendor(
    name=normalize.NAME,
    path="/v1/inspera/webhooks",
    verifier=InsperaHmacSha1,
    schema_file="inspera.schema.json",
    item_schemas=(
        normalize.WEBHOOK_SCHEMA,
        normalize.EXPORT_EVENT_SCHEMA,
        normalize.EXPORT_CANDIDATE_SCHEMA,
    ),
    decode=normalize.decode,
    split=normalize.split,
    normalize=normalize.normalize,
    success=Reply(200),
    redact_body=redact_url_queries,
    doc="docs/vendors/inspera.md",
    settings=SECTION,
    component=exports,
    commands=COMMANDS,
)
