"""Inspera's signature: `X-Inspera-Signature`, the hex HMAC-SHA1 of the raw body keyed with the
tenant's webhook secret. The head rules out a request without one, or with one that is no hex
HMAC-SHA1; the signature itself needs the body.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final

from gateway.errors import Unauthorized
from gateway.vendors.base import Credentials, VerifierContext

HEADER: Final = "x-inspera-signature"
# An Inspera signature: the hex HMAC-SHA1 (40 digits) of the body.
_SHA1_HEX: Final = re.compile(r"[0-9A-Fa-f]{40}")


class InsperaHmacSha1:
    """The verifier of Inspera webhooks, over every tenant's secrets."""

    def __init__(self, context: VerifierContext) -> None:
        self._secrets = [
            (secret, tenant)
            for tenant, credential in context.credentials
            for secret in credential.active_secrets
        ]

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """None once the header holds something that can be a signature."""
        signature = headers.get(HEADER, "").strip()
        if not signature:
            raise Unauthorized("missing X-Inspera-Signature")
        if not _SHA1_HEX.fullmatch(signature):  # never equal to a hex HMAC-SHA1
            raise Unauthorized("invalid signature")
        return None

    def verify(self, presented: Credentials) -> str:
        """The tenant whose secret signed the body."""
        # Compared as bytes: compare_digest raises TypeError on non-ASCII str (a 500, not a 401).
        signature = presented.headers.get(HEADER, "").strip().lower().encode()
        if not signature:
            raise Unauthorized("missing X-Inspera-Signature")
        tenant = None
        # Every credential is tried (no early exit), so timing does not tell which one matched.
        for secret, owner in self._secrets:
            expected = hmac.new(secret.encode(), presented.body, hashlib.sha1).hexdigest().encode()
            if hmac.compare_digest(expected, signature) and tenant is None:
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid signature")
        return tenant
