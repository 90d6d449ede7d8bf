"""The credentials an LRS takes: HTTP Basic with a key and a secret per tenant (the LRS
convention: the credential's `principal` is the key), or a bearer token (a credential with no
principal). Secrets are compared in constant time; nothing here quotes what was presented.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from gateway.auth.bearer import Tokens
from gateway.errors import ConfigError, Unauthorized
from gateway.vendors.base import Credentials, VerifierContext


class BasicOrBearer:
    """`Authorization: Basic base64(key:secret)` or `Authorization: Bearer <token>`."""

    def __init__(self, context: VerifierContext) -> None:
        self._keys: dict[str, tuple[tuple[str, ...], str]] = {}
        bearer = []
        for tenant, credential in context.credentials:
            if not credential.principal:
                bearer.append((tenant, credential))
                continue
            if credential.principal in self._keys:
                # A request names its key: a second secret for one key would never be tried.
                raise ConfigError(
                    f"xapi key {credential.principal!r} is configured twice (tenant {tenant!r})"
                )
            self._keys[credential.principal] = (credential.active_secrets, tenant)
        self._tokens = Tokens(bearer)

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """The Authorization header proves the tenant or refuses the request."""
        return self._tenant(headers.get("authorization", ""))

    def verify(self, presented: Credentials) -> str:
        """The tenant of the Authorization header's credential."""
        return self._tenant(presented.headers.get("authorization", ""))

    def _tenant(self, header: str) -> str:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._tokens.tenant(rest.strip())
        if scheme.lower() != "basic" or not rest.strip():
            raise Unauthorized("missing credentials (HTTP Basic or Bearer)")
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("invalid credentials") from None
        key, colon, secret = decoded.partition(":")
        found = self._keys.get(key)
        if not colon or found is None:
            raise Unauthorized("invalid credentials")
        secrets, tenant = found
        # Every active secret is compared, so the time taken does not tell which one matched.
        matched = False
        for candidate in secrets:
            matched |= hmac.compare_digest(candidate.encode(), secret.encode())
        if not matched:
            raise Unauthorized("invalid credentials")
        return tenant
