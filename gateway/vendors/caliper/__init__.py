"""IMS Caliper 1.1 / 1.2 sensors (Blackboard Learn, Canvas's Caliper stream, any Caliper sensor):
envelopes of events on `POST /v1/caliper`, a bearer token or a raw key; the endpoint's
configuration on GET. Its contract: docs/vendors/caliper.md (the mapping:
docs/canonical-record.md#caliper-mapping-ims-caliper-11--12).
"""

from __future__ import annotations

from typing import Final

from gateway.auth.bearer import BearerOrRaw
from gateway.vendors.base import Example, Reply, Vendor
from gateway.vendors.caliper import normalize

# What `gateway dev` shows (a curl with the dev configuration's token) and README repeats.
EXAMPLE_ENVELOPE: Final = (
    '{"sensor":"https://example.edu/sensors/1","sendTime":"2026-11-26T10:00:01.000Z",'
    '"dataVersion":"http://purl.imsglobal.org/ctx/caliper/v1p2","data":[{'
    '"@context":"http://purl.imsglobal.org/ctx/caliper/v1p2","id":"urn:uuid:3a9b0c5e-2d7f-4c1a-9e8b-1f2d3c4b5a69",'
    '"type":"AssessmentEvent","profile":"AssessmentProfile","actor":"https://example.edu/users/554433",'
    '"action":"Started","object":{"id":"https://example.edu/courses/7/assess/1","type":"Assessment"},'
    '"generated":{"id":"https://example.edu/courses/7/assess/1/users/554433/attempts/1","type":"Attempt",'
    '"assignee":"https://example.edu/users/554433","assignable":"https://example.edu/courses/7/assess/1","count":1},'
    '"eventTime":"2026-11-26T10:00:00.000Z"}]}'
)

VENDOR: Final = Vendor(
    name=normalize.NAME,
    path="/v1/caliper",
    verifier=BearerOrRaw,
    schema_file="caliper.schema.json",
    envelope_schema="envelope",
    item_schemas=(normalize.EVENT_SCHEMA, normalize.ENTITY_SCHEMA),
    decode=normalize.decode,
    split=normalize.split,
    normalize=normalize.normalize,
    success=Reply(200),
    render_error=normalize.render_error,
    describe=normalize.describe,
    doc="docs/vendors/caliper.md",
    example=Example(
        headers=(("Authorization", "Bearer dev-token"), ("Content-Type", "application/json")),
        body=EXAMPLE_ENVELOPE,
    ),
)
