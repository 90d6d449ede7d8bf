"""Authenticates a request in its vendor's own scheme and names the tenant it belongs to.

Every scheme works on the raw request (headers, query, raw body bytes) before the body is decoded.
The tenant always comes from the credential, never from the payload. Secrets and signatures are
compared in constant time; nothing here logs or returns a secret.

A credential may hold several active secrets (a rotation: the old and the new one both work), and
may use Standard Webhooks (https://www.standardwebhooks.com) instead of its vendor's own scheme:
a request carrying `webhook-signature` is then verified against the vendor's Standard Webhooks
credentials only, and any other request against its vendor-scheme credentials only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Final
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.errors import ConfigError, GatewayError, Unauthorized
from gateway.settings import Credential, PearsonSettings, Tenant

FORM = "application/x-www-form-urlencoded"


class Scheme(Enum):
    """How a vendor's sender proves who it is."""

    # `Authorization: Bearer <t>` or the raw `<t>` with no scheme (Caliper sensors send both).
    BEARER_OR_RAW = "bearer-or-raw"
    # `Authorization: Bearer <t>`, or Canvas's `access_token` query or form parameter.
    BEARER_OR_ACCESS_TOKEN = "bearer-or-access-token"  # noqa: S105  # a scheme name, no secret
    # Pearson LearningStudio: AES-CMAC in the form field AUTHORIZATION (principal|timestamp|mac).
    PEARSON_CMAC = "pearson-cmac"
    # Inspera: `X-Inspera-Signature`, hex HMAC-SHA1 of the raw body.
    INSPERA_HMAC_SHA1 = "inspera-hmac-sha1"
    # Standard Webhooks: `v1,<base64 HMAC-SHA256 of id.timestamp.body>`; chosen per credential.
    STANDARD_WEBHOOKS = "standard-webhooks"


STANDARD_WEBHOOKS_HEADER = "webhook-signature"
# An Inspera signature: the hex HMAC-SHA1 (40 digits) of the body.
_SHA1_HEX = re.compile(r"[0-9A-Fa-f]{40}")

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


class SignatureRefused(Unauthorized):
    """A Standard Webhooks request refused: HTTP has no authentication scheme for it, so its
    401 names none (no `WWW-Authenticate`), whatever the vendor's own scheme is."""


class AmbiguousCredentials(GatewayError):
    """Raised when a request carries more than one different credential (RFC 6750 §3.1: more
    than one method, or a repeated parameter, is an `invalid_request`): which one counts would be
    a choice the sender cannot see, and other readers of the request may have taken another."""

    status = 400
    code = "ambiguous_credentials"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a request presents: headers (lower-case names), query, media type and raw body."""

    headers: Mapping[str, str]
    query: Mapping[str, str]
    media_type: str = ""
    body: bytes = b""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True)
class _Webhook:
    """A Standard Webhooks credential: its keys (decoded `whsec_` secrets) and tolerance."""

    keys: tuple[bytes, ...]
    tolerance_seconds: float
    tenant: str


class Authenticator:
    """Maps presented credentials to a tenant, per vendor."""

    def __init__(
        self,
        tenants: tuple[Tenant, ...],
        pearson: PearsonSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # Looked up by the secret's digest, then compared in constant time: an O(1) lookup that
        # reveals nothing about a secret through timing.
        self._tokens: dict[tuple[str, bytes], tuple[str, str]] = {}
        self._principals: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {}
        self._secrets: dict[str, list[tuple[str, str]]] = {}
        self._webhooks: dict[str, list[_Webhook]] = {}
        for tenant in tenants:
            for cred in tenant.credentials:
                self._add(tenant.name, cred)
        self._pearson = pearson or PearsonSettings()
        self._clock = clock

    def _add(self, tenant: str, cred: Credential) -> None:
        secrets = cred.active_secrets
        if cred.scheme == Scheme.STANDARD_WEBHOOKS.value:
            keys = tuple(_webhook_key(secret) for secret in secrets)
            hook = _Webhook(keys, cred.tolerance_seconds, tenant)
            self._webhooks.setdefault(cred.vendor, []).append(hook)
            return
        for secret in secrets:
            self._tokens[(cred.vendor, _digest(secret))] = (secret, tenant)
            self._secrets.setdefault(cred.vendor, []).append((secret, tenant))
        if cred.principal:
            self._principals[(cred.vendor, cred.principal)] = (secrets, tenant)

    def authenticate(self, vendor: str, scheme: Scheme, presented: Credentials) -> str:
        """The tenant owning the presented credential; raises Unauthorized otherwise."""
        if scheme is Scheme.STANDARD_WEBHOOKS or (
            vendor in self._webhooks and STANDARD_WEBHOOKS_HEADER in presented.headers
        ):
            return self._standard_webhooks(vendor, presented)
        if scheme is Scheme.BEARER_OR_RAW:
            return self._token(vendor, _bearer_or_raw(presented.headers.get("authorization", "")))
        if scheme is Scheme.BEARER_OR_ACCESS_TOKEN:
            return self._token(vendor, _bearer_or_access_token(presented))
        if scheme is Scheme.PEARSON_CMAC:
            return self._pearson_cmac(vendor, presented)
        return self._inspera_hmac(vendor, presented)

    def authenticate_head(
        self,
        vendor: str,
        scheme: Scheme,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        media_type: str,
    ) -> str | None:
        """What the head alone (headers, query, media type) proves, before the body is read: the
        tenant, when the credential travels there (bearer tokens and raw keys, Canvas's header
        or query `access_token`); None when only the body can prove it (then `authenticate` the
        whole request), once the head has all it must have. Raises Unauthorized when the head
        already rules the request out: no body could make it valid.

        A form body may hold a credential too (Canvas's `access_token`): a form request proven
        by its head must still be authenticated whole once its body is read."""
        if scheme is Scheme.STANDARD_WEBHOOKS or (
            vendor in self._webhooks and STANDARD_WEBHOOKS_HEADER in headers
        ):
            self._standard_webhooks_head(vendor, headers)
            return None
        if scheme is Scheme.BEARER_OR_RAW:
            return self._token(vendor, _bearer_or_raw(headers.get("authorization", "")))
        if scheme is Scheme.BEARER_OR_ACCESS_TOKEN:
            # Read as `authenticate` reads them, without the body: the header and the query.
            token = _bearer_or_access_token(Credentials(headers, query))
            if token:
                return self._token(vendor, token)
            if media_type == FORM:
                return None  # maybe in the form
            raise Unauthorized("missing credentials")
        if scheme is Scheme.PEARSON_CMAC:
            if media_type != FORM:  # the signature travels in the form
                raise Unauthorized("AUTHORIZATION must be principal|timestamp|mac")
            return None
        signature = headers.get("x-inspera-signature", "").strip()
        if not signature:
            raise Unauthorized("missing X-Inspera-Signature")
        if not _SHA1_HEX.fullmatch(signature):  # never equal to a hex HMAC-SHA1
            raise Unauthorized("invalid signature")
        return None

    def _standard_webhooks_head(self, vendor: str, headers: Mapping[str, str]) -> None:
        """The Standard Webhooks headers a signature needs, and a timestamp that some
        credential's tolerance can take (the signature itself needs the body)."""
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "").strip()
        if not (webhook_id and timestamp and headers.get(STANDARD_WEBHOOKS_HEADER, "")):
            raise SignatureRefused("missing webhook-id, webhook-timestamp or webhook-signature")
        if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
            raise SignatureRefused("webhook-timestamp is not a Unix timestamp")
        hooks = self._webhooks.get(vendor, [])
        if not hooks:
            raise SignatureRefused("invalid signature")
        tolerance = max(hook.tolerance_seconds for hook in hooks)
        if abs(self._clock().timestamp() - int(timestamp)) > tolerance:
            raise SignatureRefused("webhook-timestamp is outside the accepted window")

    def _token(self, vendor: str, token: str) -> str:
        if not token:
            raise Unauthorized("missing credentials")
        found = self._tokens.get((vendor, _digest(token)))
        if found is None or not hmac.compare_digest(found[0].encode(), token.encode()):
            raise Unauthorized("invalid credentials")
        return found[1]

    def _pearson_cmac(self, vendor: str, presented: Credentials) -> str:
        form = form_fields(presented.body) if presented.media_type == FORM else {}
        authorization = form.get("AUTHORIZATION", "")
        delimiter = form.get("AUTHORIZATION-DELIMITER") or "|"
        parts = authorization.split(delimiter)
        if len(parts) != 3:
            raise Unauthorized("AUTHORIZATION must be principal|timestamp|mac")
        principal, timestamp, mac = parts
        # Before the MAC: Pearson's format is public, so refusing another shape tells nothing.
        signed_at = _pearson_time(timestamp)
        found = self._principals.get((vendor, principal))
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
        max_age, max_ahead = self._pearson.max_age_seconds, self._pearson.max_future_seconds
        if (max_age > 0 and age > max_age) or (max_ahead > 0 and -age > max_ahead):
            raise Unauthorized("AUTHORIZATION timestamp is outside the accepted window")

    def _inspera_hmac(self, vendor: str, presented: Credentials) -> str:
        # Compared as bytes: compare_digest raises TypeError on non-ASCII str (a 500, not a 401).
        signature = presented.headers.get("x-inspera-signature", "").strip().lower().encode()
        if not signature:
            raise Unauthorized("missing X-Inspera-Signature")
        tenant = None
        # Every credential is tried (no early exit), so timing does not tell which one matched.
        for secret, owner in self._secrets.get(vendor, []):
            expected = hmac.new(secret.encode(), presented.body, hashlib.sha1).hexdigest().encode()
            if hmac.compare_digest(expected, signature) and tenant is None:
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid signature")
        return tenant

    def _standard_webhooks(self, vendor: str, presented: Credentials) -> str:
        headers = presented.headers
        webhook_id = headers.get("webhook-id", "")
        timestamp = headers.get("webhook-timestamp", "").strip()
        header = headers.get(STANDARD_WEBHOOKS_HEADER, "")
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


def _webhook_key(secret: str) -> bytes:
    """A Standard Webhooks signing key: the base64 after `whsec_` (checked at start-up)."""
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("a standard-webhooks secret is not whsec_ and base64") from None


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


def form_fields(body: bytes) -> dict[str, str]:
    """An url-encoded form's fields (the first value of each); undecodable forms have none."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items()}


def _bearer_or_raw(header: str) -> str:
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return header.strip()


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


def _bearer_or_access_token(presented: Credentials) -> str:
    """The one token presented: a bearer header or Canvas's `access_token` (query or form).

    Every place it can be is read, every time it is given: the same token given more than once
    is one credential, two different ones are refused (AmbiguousCredentials, 400) rather than one
    picked silently (a first or last value, a header over a parameter) where a proxy, a log
    redactor or the sender may have read the other. An empty value is no token (Canvas's
    `.presence`).
    """
    tokens: list[str] = []
    scheme, _, rest = presented.headers.get("authorization", "").strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        tokens.append(rest.strip())
    getlist = getattr(presented.query, "getlist", None)  # Starlette's QueryParams: every value
    if callable(getlist):
        tokens += [str(value) for value in getlist("access_token")]
    elif "access_token" in presented.query:
        tokens.append(presented.query["access_token"])
    if presented.media_type == FORM:
        tokens += _form_values(presented.body, "access_token")
    distinct = {token for token in tokens if token}
    if len(distinct) > 1:
        raise AmbiguousCredentials(
            "more than one access token, with different values (Authorization header, "
            "access_token in the query or the form): send one"
        )
    return distinct.pop() if distinct else ""


def _form_values(body: bytes, name: str) -> list[str]:
    """Every value of one field of an url-encoded form; none when the form is undecodable."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return []
    return parsed.get(name, [])
