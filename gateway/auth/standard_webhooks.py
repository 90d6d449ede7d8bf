"""Standard Webhooks (https://www.standardwebhooks.com), which any vendor's credential may use
instead of its vendor's own scheme (`scheme = "standard-webhooks"`, with `whsec_` secrets).

A request carrying `webhook-signature` is then verified against its vendor's Standard Webhooks
credentials only, and any other request against its vendor-scheme credentials only. A signature
is `v1,<base64 HMAC-SHA256 of id.timestamp.body>`; the timestamp must be within the tolerance of
the credential that signed it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from gateway.errors import ConfigError, SignatureRefused
from gateway.settings import Tenant
from gateway.vendors.base import Credentials

SCHEME: Final = "standard-webhooks"
HEADER: Final = "webhook-signature"


@dataclass(frozen=True, slots=True)
class _Webhook:
    """A Standard Webhooks credential: its keys (decoded `whsec_` secrets) and tolerance."""

    keys: tuple[bytes, ...]
    tolerance_seconds: float
    tenant: str


class StandardWebhooks:
    """Every tenant's Standard Webhooks credentials, per vendor."""

    def __init__(self, tenants: Iterable[Tenant], clock: Callable[[], datetime]) -> None:
        self._webhooks: dict[str, list[_Webhook]] = {}
        for tenant in tenants:
            for cred in tenant.credentials:
                if cred.scheme == SCHEME:
                    keys = tuple(webhook_key(secret) for secret in cred.active_secrets)
                    hook = _Webhook(keys, cred.tolerance_seconds, tenant.name)
                    self._webhooks.setdefault(cred.vendor, []).append(hook)
        self._clock = clock

    def signed(self, vendor: str, headers: Mapping[str, str]) -> bool:
        """Whether this request is one for Standard Webhooks: its vendor has such credentials
        and it carries a signature."""
        return vendor in self._webhooks and HEADER in headers

    def head(self, vendor: str, headers: Mapping[str, str]) -> None:
        """The Standard Webhooks headers a signature needs, and a timestamp that some
        credential's tolerance can take (the signature itself needs the body)."""
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "").strip()
        if not (webhook_id and timestamp and headers.get(HEADER, "")):
            raise SignatureRefused("missing webhook-id, webhook-timestamp or webhook-signature")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureRefused("webhook-timestamp is not a Unix timestamp")
        hooks = self._webhooks.get(vendor, [])
        if not hooks:
            raise SignatureRefused("invalid signature")
        tolerance = max(hook.tolerance_seconds for hook in hooks)
        if abs(self._clock().timestamp() - int(timestamp)) > tolerance:
            raise SignatureRefused("webhook-timestamp is outside the accepted window")

    def verify(self, vendor: str, presented: Credentials) -> str:
        """The tenant whose key signed the request; raises SignatureRefused otherwise."""
        headers = presented.headers
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "").strip()
        header = headers.get(HEADER, "")
        if not (webhook_id and timestamp and header):
            raise SignatureRefused("missing webhook-id, webhook-timestamp or webhook-signature")
        # Bounded: int() of thousands of digits raises, and far-off times fail the window anyway.
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureRefused("webhook-timestamp is not a Unix timestamp")
        # The signatures presented for version v1 (others, e.g. v1a asymmetric, are not ours).
        presented_signatures = [
            sig.encode("utf-8")
            for version, _, sig in (part.partition(",") for part in header.split())
            if version == "v1" and sig
        ]
        signed = f"{webhook_id}.{timestamp}.".encode() + presented.body
        tenant = None
        tolerance = 0.0
        # Every key against every signature, no early exit: timing tells nothing of a match.
        for hook in self._webhooks.get(vendor, []):
            for key in hook.keys:
                mac = hmac.new(key, signed, hashlib.sha256).digest()
                expected = base64.b64encode(mac)
                for signature in presented_signatures:
                    if hmac.compare_digest(expected, signature) and tenant is None:
                        tenant, tolerance = hook.tenant, hook.tolerance_seconds
        if tenant is None:
            raise SignatureRefused("invalid signature")
        # Checked after the signature: an unsigned timestamp says nothing worth answering about.
        if abs(self._clock().timestamp() - int(timestamp)) > tolerance:
            raise SignatureRefused("webhook-timestamp is outside the accepted window")
        return tenant


def webhook_key(secret: str) -> bytes:
    """A Standard Webhooks signing key: the base64 after `whsec_` (checked at start-up)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("a standard-webhooks secret is not whsec_ and base64") from None
