"""Authenticates a request in its vendor's own scheme and names the tenant it belongs to.

Every scheme works on the raw request (headers, query, raw body bytes) before the body is decoded.
The tenant always comes from the credential, never from the payload. Secrets and signatures are
compared in constant time; nothing here logs or returns a secret.

A vendor names its scheme's verifier (`Vendor.verifier`, see `gateway.vendors.base.Verifier`):
the shared schemes are here (`bearer`), a vendor's own signature scheme is in its package. A
credential may hold several active secrets (a rotation: the old and the new one both work), and
may use Standard Webhooks instead of its vendor's own scheme (`standard_webhooks`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from gateway.auth.forms import FORM, form_fields
from gateway.auth.standard_webhooks import SCHEME as STANDARD_WEBHOOKS
from gateway.auth.standard_webhooks import StandardWebhooks
from gateway.settings import Settings, Tenant
from gateway.vendors.base import Credentials, VerifierContext

if TYPE_CHECKING:  # the vendors' contract imports nothing of this package at run time
    from gateway.vendors.base import Vendor, Verifier

__all__ = [
    "FORM",
    "Authenticator",
    "Credentials",
    "form_fields",
]


class Authenticator:
    """Maps presented credentials to a tenant, per vendor: through the vendor's own verifier,
    or Standard Webhooks for a signed request of a vendor that has such credentials."""

    def __init__(
        self,
        tenants: tuple[Tenant, ...],
        settings: Settings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tenants = tenants
        self._settings = settings or Settings()
        self._clock = clock
        self._webhooks = StandardWebhooks(tenants, clock)
        self._verifiers: dict[tuple[str, str], Verifier] = {}

    def prepare(self, vendors: Iterable[Vendor]) -> None:
        """Build the vendors' verifiers now, so that start-up fails, not the first request."""
        for vendor in vendors:
            self.verifier(vendor)

    def authenticate(self, vendor: Vendor, presented: Credentials) -> str | Awaitable[str]:
        """The tenant owning the presented credential; raises Unauthorized otherwise. An
        awaitable when the vendor's scheme may have to fetch a key first (see Verifier)."""
        if self._webhooks.signed(vendor.name, presented.headers):
            return self._webhooks.verify(vendor.name, presented)
        return self.verifier(vendor).verify(presented)

    def authenticate_head(
        self,
        vendor: Vendor,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        media_type: str,
    ) -> str | None:
        """What the head alone (headers, query, media type) proves, before the body is read: the
        tenant, when the credential travels there (bearer tokens and raw keys, a header or query
        `access_token`); None when only the body can prove it (then `authenticate` the whole
        request), once the head has all it must have. Raises Unauthorized when the head already
        rules the request out: no body could make it valid.

        A form body may hold a credential too (an `access_token`): a form request proven by its
        head must still be authenticated whole once its body is read."""
        if self._webhooks.signed(vendor.name, headers):
            self._webhooks.head(vendor.name, headers)
            return None
        return self.verifier(vendor).head(headers, query, media_type)

    def verifier(self, vendor: Vendor) -> Verifier:
        """The verifier of `vendor`'s route (a vendor's feeds have their own), built once, over
        every tenant's credentials of the vendor in its own scheme."""
        found = self._verifiers.get((vendor.name, vendor.path))
        if found is None:
            own = tuple(
                (tenant.name, credential)
                for tenant in self._tenants
                for credential in tenant.credentials
                if credential.vendor == vendor.name and credential.scheme != STANDARD_WEBHOOKS
            )
            found = vendor.verifier(VerifierContext(own, self._settings, self._clock))
            self._verifiers[(vendor.name, vendor.path)] = found
        return found
