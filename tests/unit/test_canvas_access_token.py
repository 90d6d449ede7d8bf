"""Canvas's credentials: a bearer header or an `access_token` parameter, never two different ones.

A request that carries several different tokens (the parameter twice, in the query and in the
form, or a header and a parameter that disagree) is refused with 400: which one "wins" would be
a choice the sender cannot see, and a proxy, a log redactor or the sender's own code may have
read another one (RFC 6750 §3.1: repeating the parameter or using more than one method is an
`invalid_request`, 400). The same token repeated names one credential and is taken.

The query is Starlette's `QueryParams`, as the app hands it over.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from starlette.datastructures import QueryParams

from gateway.auth import Authenticator, Credentials
from gateway.errors import GatewayError, Unauthorized
from gateway.settings import Credential, Tenant
from gateway.vendors.canvas import VENDOR as CANVAS

TOKEN = "canvas-token-1"
OTHER = "canvas-token-2"
FORM = "application/x-www-form-urlencoded"
AUTH = Authenticator(
    (
        Tenant("uni", (Credential("canvas", TOKEN),)),
        Tenant("college", (Credential("canvas", OTHER),)),
    )
)


def tenant_of(
    query: str = "", form: dict[str, str] | list[tuple[str, str]] | None = None, bearer: str = ""
) -> str:
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    body = urlencode(form).encode() if form is not None else b""
    presented = Credentials(headers, QueryParams(query), FORM if form is not None else "", body)
    tenant = AUTH.authenticate(CANVAS, presented)
    assert isinstance(tenant, str)  # a scheme without fetched keys answers at once
    return tenant


def refused(**presented: object) -> GatewayError:
    with pytest.raises(GatewayError) as error:
        tenant_of(**presented)  # type: ignore[arg-type]
    return error.value


@pytest.mark.parametrize(
    "presented",
    [
        {"query": f"access_token={OTHER}&access_token={TOKEN}"},
        {"query": f"access_token={TOKEN}&access_token={OTHER}"},
        {"query": f"access_token={TOKEN}", "form": {"access_token": OTHER}},
        {"query": f"access_token={OTHER}", "form": {"access_token": TOKEN}},
        {"form": [("access_token", TOKEN), ("access_token", OTHER)]},
        {"bearer": TOKEN, "query": f"access_token={OTHER}"},
        {"bearer": OTHER, "form": {"access_token": TOKEN}},
        {"query": "access_token=nope&access_token=" + TOKEN},
    ],
    ids=[
        "query-twice",
        "query-twice-swapped",
        "query-and-form",
        "form-and-query",
        "form-twice",
        "bearer-and-query",
        "bearer-and-form",
        "a-wrong-one-and-the-right-one",
    ],
)
def test_two_different_tokens_are_refused_as_a_bad_request(presented: dict[str, object]) -> None:
    error = refused(**presented)
    assert error.status == 400
    assert not isinstance(error, Unauthorized)
    assert "more than one" in error.message
    for token in (TOKEN, OTHER, "nope"):
        assert token not in error.message  # the answer never quotes a credential


@pytest.mark.parametrize(
    "presented",
    [
        {"bearer": TOKEN},
        {"query": f"access_token={TOKEN}"},
        {"form": {"access_token": TOKEN}},
        {"query": f"access_token={TOKEN}&access_token={TOKEN}"},
        {"query": f"access_token={TOKEN}", "form": {"access_token": TOKEN}},
        {"bearer": TOKEN, "query": f"access_token={TOKEN}"},
        {"bearer": TOKEN, "query": "access_token="},  # empty: no token (Canvas's `.presence`)
    ],
    ids=[
        "bearer",
        "query",
        "form",
        "query-twice-same",
        "query-and-form-same",
        "bearer-and-query-same",
        "bearer-and-empty",
    ],
)
def test_one_credential_however_often_it_is_given_is_taken(presented: dict[str, object]) -> None:
    assert tenant_of(**presented) == "uni"  # type: ignore[arg-type]


def test_a_single_wrong_token_is_still_a_401() -> None:
    error = refused(query="access_token=nope")
    assert isinstance(error, Unauthorized)
    assert refused(query="").status == 401
