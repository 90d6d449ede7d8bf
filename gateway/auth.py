"""Authenticates a request in its vendor's own scheme and names the tenant it belongs to.

The tenant always comes from the credential, never from the payload. Secrets are compared in
constant time; nothing here logs or returns a secret.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from gateway.errors import Unauthorized
from gateway.settings import Tenant


class Scheme(Enum):
    """How a vendor's sender proves who it is."""

    BEARER_OR_RAW = (
        "bearer-or-raw"  # `Authorization: Bearer <t>` or the raw `<t>` (Caliper sensors)
    )


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents: its headers and query (lower-case header names)."""

    headers: Mapping[str, str]
    query: Mapping[str, str]


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Authenticator:
    """Maps presented credentials to a tenant, per vendor."""

    def __init__(self, tenants: tuple[Tenant, ...]) -> None:
        # Looked up by the secret's digest, then compared in constant time: an O(1) lookup that
        # reveals nothing about a secret through timing.
        self._tokens: dict[tuple[str, bytes], tuple[str, str]] = {}
        for tenant in tenants:
            for cred in tenant.credentials:
                self._tokens[(cred.vendor, _digest(cred.secret))] = (cred.secret, tenant.name)

    def authenticate(self, vendor: str, scheme: Scheme, presented: Credentials) -> str:
        """The tenant owning the presented credential; raises Unauthorized otherwise."""
        if scheme is Scheme.BEARER_OR_RAW:
            return self._token(vendor, _bearer_or_raw(presented.headers.get("authorization", "")))
        raise Unauthorized(f"no authentication scheme {scheme!r}")  # pragma: no cover

    def _token(self, vendor: str, token: str) -> str:
        if not token:
            raise Unauthorized("missing credentials")
        found = self._tokens.get((vendor, _digest(token)))
        if found is None or not hmac.compare_digest(found[0].encode(), token.encode()):
            raise Unauthorized("invalid credentials")
        return found[1]


def _bearer_or_raw(header: str) -> str:
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return header.strip()
