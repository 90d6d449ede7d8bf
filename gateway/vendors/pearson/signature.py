"""Pearson's signature: AES-CMAC (RFC 4493) in the form field AUTHORIZATION
(`principal|timestamp|mac`), keyed with the principal's secret, over the timestamp and the signed
form fields, in hex; the timestamp in Pearson's own fixed-width format and, by default, within a
window (`[pearson]`, gateway/vendors/pearson/settings.py).

The signature travels in the form: the head can only rule out a request that is no form. One
answer for an unknown principal and a wrong MAC, at the same cost, so that neither the answer
nor its timing tells which principals exist.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.auth import FORM, form_fields
from gateway.errors import Unauthorized
from gateway.vendors.base import Credentials, VerifierContext
from gateway.vendors.pearson.settings import PearsonSettings

# The AUTHORIZATION timestamp as Pearson's code writes it, in UTC: EventingClient's
# `yyyy-MM-dd'T'HH:mm:ss'Z'` (2015-01-20T18:58:11Z), or `+0000` for the `Z`, which is what the
# `yyyy-MM-dd'T'HH:mm:ssZ` its demo subscriber and its javadoc name writes. The MAC covers the
# timestamp and MESSAGE-ID with no separator, so only a fixed width makes their boundary
# unambiguous: with any other shape allowed, characters moved between the two keep the MAC
# valid and make "another" message. Neither spelling is a prefix of the other, and no timestamp
# of one is another of either with a character more or less. ASCII digits only (not `\d`).
_PEARSON_TIMESTAMP: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:Z|\+0000)"
)
# The key the MAC is computed with when the principal is unknown, so that an unknown principal
# costs the same work as a wrong signature and timing does not tell which principals exist.
_UNKNOWN_PRINCIPAL_KEY: Final = bytes(16)
# One answer for an unknown principal and a wrong MAC: no oracle for which principals exist.
_INVALID_SIGNATURE: Final = "invalid signature"


class PearsonCmac:
    """The verifier of Pearson deliveries, over the principals of every tenant."""

    def __init__(self, context: VerifierContext) -> None:
        self._principals: dict[str, tuple[tuple[str, ...], str]] = {}
        for tenant, credential in context.credentials:
            if credential.principal:
                self._principals[credential.principal] = (credential.active_secrets, tenant)
        self._settings = context.settings.section(PearsonSettings)
        self._clock = context.clock

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """None for a form (the signature is in it); a request that is no form is refused."""
        if media_type != FORM:  # the signature travels in the form
            raise Unauthorized("AUTHORIZATION must be principal|timestamp|mac")
        return None

    def verify(self, presented: Credentials) -> str:
        """The tenant of the principal whose secret signed the delivery."""
        form = form_fields(presented.body) if presented.media_type == FORM else {}
        authorization = form.get("AUTHORIZATION", "")
        delimiter = form.get("AUTHORIZATION-DELIMITER") or "|"
        parts = authorization.split(delimiter)
        if len(parts) != 3:
            raise Unauthorized("AUTHORIZATION must be principal|timestamp|mac")
        principal, timestamp, mac = parts
        # Before the MAC: Pearson's format is public, so refusing another shape tells nothing.
        signed_at = _pearson_time(timestamp)
        found = self._principals.get(principal)
        secrets, tenant = found if found is not None else ((), "")
        message = "".join(
            (
                timestamp,
                form.get("MESSAGE-ID", ""),
                form.get("MESSAGE-TYPE", ""),
                form.get("PAYLOAD-CONTENT-TYPE", ""),
                form.get("PAYLOAD", ""),
            )
        )
        # Compared as bytes: compare_digest raises TypeError on non-ASCII str (a 500, not a 401).
        presented_mac = mac.strip().lower().encode("utf-8")
        matched = False
        # Every active secret is tried (no early exit): timing does not tell which one matched.
        for secret in secrets:
            expected = aes_cmac_hex(secret, message).encode()
            matched = hmac.compare_digest(expected, presented_mac) | matched
        if found is None:
            # The same work for a principal nobody has, and the same answer as a wrong MAC.
            aes_cmac(_UNKNOWN_PRINCIPAL_KEY, message.encode("utf-8"))
        if not matched:
            raise Unauthorized(_INVALID_SIGNATURE)
        self._check_freshness(signed_at)
        return tenant

    def _check_freshness(self, signed_at: datetime) -> None:
        """Judged after the signature: a forged delivery learns nothing about the window."""
        age = (self._clock() - signed_at).total_seconds()
        max_age, max_ahead = self._settings.max_age_seconds, self._settings.max_future_seconds
        if (max_age > 0 and age > max_age) or (max_ahead > 0 and -age > max_ahead):
            raise Unauthorized("AUTHORIZATION timestamp is outside the accepted window")


def aes_cmac(key: bytes, message: bytes) -> bytes:
    """AES-CMAC (RFC 4493) of `message`: a 16-byte tag. `key` is 16, 24 or 32 bytes."""
    cmac = CMAC(algorithms.AES(key))
    cmac.update(message)
    return cmac.finalize()


def aes_cmac_hex(secret: str, message: str) -> str:
    """Pearson's MAC: AES-CMAC keyed with the secret's UTF-8 bytes, over the UTF-8 message, hex."""
    key = secret.encode("utf-8")
    if len(key) not in (16, 24, 32):
        raise Unauthorized("the configured Pearson secret is not an AES key (16, 24 or 32 bytes)")
    return aes_cmac(key, message.encode("utf-8")).hex()


def _pearson_time(timestamp: str) -> datetime:
    """The moment of an AUTHORIZATION timestamp in Pearson's own format (`_PEARSON_TIMESTAMP`)."""
    found = _PEARSON_TIMESTAMP.fullmatch(timestamp)
    if found is None:
        raise Unauthorized("AUTHORIZATION timestamp is not yyyy-MM-ddTHH:mm:ssZ (UTC)")
    year, month, day, hour, minute, second = (int(part) for part in found.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:  # the right shape, no date (month 13)
        raise Unauthorized("AUTHORIZATION timestamp is not a date") from None
