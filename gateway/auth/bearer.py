"""Bearer tokens: the shared schemes of vendors whose senders present a token, either in
`Authorization: Bearer <t>` or as the raw `<t>` with no scheme (`BearerOrRaw`), or in a bearer
header or an RFC 6750 `access_token` parameter of the query or the form (`BearerOrAccessToken`,
one token only). The head proves a token, except one that may be in a form body.

A token is looked up by its digest, then compared in constant time: an O(1) lookup that reveals
nothing about a secret through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

from gateway.auth.forms import FORM, form_values
from gateway.errors import AmbiguousCredentials, Unauthorized
from gateway.settings import Credential
from gateway.vendors.base import Credentials, VerifierContext


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


class Tokens:
    """A vendor's tokens (every active secret of each credential), each naming its tenant."""

    def __init__(self, credentials: Iterable[tuple[str, Credential]]) -> None:
        self._tokens: dict[bytes, tuple[str, str]] = {}
        for tenant, credential in credentials:
            for secret in credential.active_secrets:
                self._tokens[_digest(secret)] = (secret, tenant)

    def tenant(self, token: str) -> str:
        """The tenant of `token`; raises Unauthorized for none or an unknown one."""
        if not token:
            raise Unauthorized("missing credentials")
        found = self._tokens.get(_digest(token))
        if found is None or not hmac.compare_digest(found[0].encode(), token.encode()):
            raise Unauthorized("invalid credentials")
        return found[1]


class BearerOrRaw:
    """`Authorization: Bearer <t>` or the raw `<t>` with no scheme (some senders send either)."""

    def __init__(self, context: VerifierContext) -> None:
        self._tokens = Tokens(context.credentials)

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """The header proves the token or refuses it."""
        return self._tokens.tenant(bearer_or_raw(headers.get("authorization", "")))

    def verify(self, presented: Credentials) -> str:
        """The tenant of the header's token."""
        return self._tokens.tenant(bearer_or_raw(presented.headers.get("authorization", "")))


class BearerOrAccessToken:
    """`Authorization: Bearer <t>`, or an `access_token` query or form parameter (RFC 6750)."""

    def __init__(self, context: VerifierContext) -> None:
        self._tokens = Tokens(context.credentials)

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """The tenant when the header or the query holds the token; None when the token may be
        in a form body (a form proven by its head must still be checked whole once read: it may
        hold another token)."""
        # Read as `verify` reads them, without the body: the header and the query.
        token = bearer_or_access_token(Credentials(headers, query))
        if token:
            return self._tokens.tenant(token)
        if media_type == FORM:
            return None  # maybe in the form
        raise Unauthorized("missing credentials")

    def verify(self, presented: Credentials) -> str:
        """The tenant of the one token presented (AmbiguousCredentials for two different)."""
        return self._tokens.tenant(bearer_or_access_token(presented))


def bearer_or_raw(header: str) -> str:
    """The token of an Authorization header: after `Bearer `, else the whole value."""
    scheme, _, rest = header.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    return header.strip()


def bearer_or_access_token(presented: Credentials) -> str:
    """The one token presented: a bearer header or an `access_token` (query or form).

    Every place it can be is read, every time it is given: the same token given more than once
    is one credential, two different ones are refused (AmbiguousCredentials, 400) rather than one
    picked silently (a first or last value, a header over a parameter) where a proxy, a log
    redactor or the sender may have read the other. An empty value is no token, as an absent one.
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
        tokens += form_values(presented.body, "access_token")
    distinct = {token for token in tokens if token}
    if len(distinct) > 1:
        raise AmbiguousCredentials(
            "more than one access token, with different values (Authorization header, "
            "access_token in the query or the form): send one"
        )
    return distinct.pop() if distinct else ""
