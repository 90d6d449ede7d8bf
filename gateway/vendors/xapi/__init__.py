"""xAPI (Experience API 1.0.3, IEEE 9274.1.1-2023): the statements that Moodle's xAPI log store,
Open edX's event-routing-backends, H5P, cmi5 players and quiz tools send to a Learning Record
Store, taken at `/xapi/` as an LRS takes them (HTTP Basic key and secret, or a bearer token;
`X-Experience-API-Version` on every request and answer). See docs/vendors/xapi.md.
"""

from __future__ import annotations

from typing import Final

from gateway.vendors.base import Component, ComponentContext, Reply, Vendor
from gateway.vendors.xapi import normalize
from gateway.vendors.xapi.auth import BasicOrBearer


def lrs(context: ComponentContext) -> Component:
    """The statements and about resources (not started), which answer with the ids and 409s
    the static `success` cannot say; imported when the app builds it."""
    from gateway.vendors.xapi.lrs import Lrs  # noqa: PLC0415  # see docstring

    return Lrs(context.settings, context.pipeline, VENDOR)


VENDOR: Final = Vendor(
    name=normalize.NAME,
    # Served by the component (POST and PUT); the vendor's steps (decode, split, normalize)
    # are also what `gateway validate` and `gateway replay` run.
    path=normalize.STATEMENTS_PATH,
    verifier=BasicOrBearer,
    schema_file="xapi.schema.json",
    item_schemas=(normalize.STATEMENT_SCHEMA,),
    decode=normalize.decode,
    split=normalize.split,
    normalize=normalize.normalize,
    success=Reply(200, b"[]", "application/json", {"x-experience-api-version": normalize.VERSION}),
    render_error=normalize.render_error,
    doc="docs/vendors/xapi.md",
    # The actor and other agents are persons, whatever their objectType says: their names are
    # personal data under the tenant's policy.
    person_keys=frozenset({"actor", "authority", "instructor", "member"}),
    # An agent's `mbox` is a mailto: address (its `mbox_sha1sum` is no address).
    personal_keys=frozenset({"mbox"}),
    component=lrs,
)
