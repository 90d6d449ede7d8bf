"""Pearson LearningStudio eventing: one url-encoded message per POST, signed with AES-CMAC in its
AUTHORIZATION field and redelivered for 72 hours until it is answered 200, so that nothing about
an authenticated delivery's content earns it a 4xx. See docs/vendors/pearson.md.
"""

from __future__ import annotations

from typing import Final

from gateway.auth import FORM
from gateway.vendors.base import Reply, Vendor, redact_form_fields
from gateway.vendors.pearson import normalize
from gateway.vendors.pearson.settings import SECTION
from gateway.vendors.pearson.signature import PearsonCmac

VENDOR: Final = Vendor(
    name=normalize.NAME,
    path="/v1/pearson/eventing",
    verifier=PearsonCmac,
    schema_file="pearson.schema.json",
    item_schemas=(normalize.MESSAGE_SCHEMA,),
    decode=normalize.decode,
    split=normalize.split,
    normalize=normalize.normalize,
    success=Reply(200),
    # A non-200 makes Pearson redeliver a poison message for 72 h: an authenticated body that
    # cannot be decoded is dead-lettered whole and answered 200 too.
    accept_malformed=True,
    redact_body=redact_form_fields("AUTHORIZATION"),
    media_types=(FORM,),
    doc="docs/vendors/pearson.md",
    settings=SECTION,
    # The student who took the exam, whatever its `type` says: its names and email are personal.
    person_keys=frozenset({"actor"}),
)
