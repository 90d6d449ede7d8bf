"""The xAPI decoder, verifier and privacy, without a server: what the spec refuses is refused
with a pointer to it, what it takes becomes schema-valid statements and canonical records
(hypothesis over arbitrary statements), the credentials are the LRS's, and an email is personal
data under the tenant's policy."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.canonical import NormalizeContext
from gateway.errors import ConfigError, GatewayError, MalformedPayload, Unauthorized
from gateway.pipeline import normalize_items
from gateway.privacy import Privacy
from gateway.settings import Credential, Settings, Tenant, TenantPrivacy
from gateway.vendors.base import Inbound, VerifierContext
from gateway.vendors.xapi import VENDOR
from gateway.vendors.xapi.auth import BasicOrBearer
from gateway.vendors.xapi.normalize import check_version, decode, split
from tests.support.schemas import CANONICAL, SCHEMAS

STATEMENT = SCHEMAS.get(VENDOR.schema_ref("statement"))
CTX = NormalizeContext("t", "xapi", datetime(2026, 1, 1, tzinfo=UTC), "r")
ID = "a1b2c3d4-0000-4000-8000-000000000001"


def good(**changes: Any) -> dict[str, Any]:
    statement = {
        "actor": {"mbox": "mailto:ada@example.edu", "name": "Ada Lovelace"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/passed", "display": {"en-US": "passed"}},
        "object": {"id": "https://quiz.example.edu/q/1", "objectType": "Activity"},
        "result": {"score": {"raw": 8, "min": 0, "max": 10, "scaled": 0.8}, "success": True},
    }
    return {**statement, **changes}


def post(body: Any, method: str = "POST", **query: str) -> list[dict[str, Any]]:
    return decode(Inbound(method, "application/json", orjson.dumps(body), query=query))


def refused_at(body: Any, **query: str) -> list[str]:
    with pytest.raises(MalformedPayload) as refused:
        post(body, "PUT" if query else "POST", **query)
    return [error.path for error in refused.value.errors]


@pytest.mark.parametrize(
    ("statement", "pointer"),
    [
        (good(actor={"objectType": "Group", "name": "no one"}), "/actor"),
        (good(actor={"objectType": "Group", "member": [{"name": "x"}]}), "/actor/member/0"),
        (good(actor={"account": {"homePage": "not an iri", "name": "1"}}), "/actor/account"),
        (good(actor={"mbox": "ada@example.edu"}), "/actor/mbox"),
        (good(actor={"mbox_sha1sum": "abc"}), "/actor/mbox_sha1sum"),
        (good(id="not-a-uuid"), "/id"),
        (good(verb={"id": "http://x.example/v", "display": {"en": 1}}), "/verb/display"),
        (good(object={"objectType": "StatementRef", "id": "x"}), "/object/id"),
        (good(object={"objectType": "Nothing"}), "/object/objectType"),
        (good(result={"duration": "30 minutes"}), "/result/duration"),
        (good(result={"success": "yes"}), "/result/success"),
        (good(result={"score": {"min": 5, "max": 5}}), "/result/score/max"),
        (good(result={"score": {"raw": -1, "min": 0}}), "/result/score/raw"),
        (good(result={"score": {"raw": "8"}}), "/result/score/raw"),
        (good(context={"registration": "x"}), "/context/registration"),
        (
            good(context={"contextActivities": {"sibling": []}}),
            "/context/contextActivities/sibling",
        ),
        (good(timestamp="2026-02-30T10:00:00Z"), "/timestamp"),
        (good(version="0.95"), "/version"),
        (good(verb={"id": "http://adlnet.gov/expapi/verbs/voided"}), "/object"),
        (
            good(object={"objectType": "SubStatement", **good(), "id": ID}),
            "/object/id",  # a SubStatement has no id of its own
        ),
    ],
)
def test_what_the_spec_refuses_is_a_400_pointing_at_it(
    statement: dict[str, Any], pointer: str
) -> None:
    assert pointer in refused_at(statement)


def test_a_batch_is_refused_whole_and_every_problem_is_named() -> None:
    batch = [good(), good(verb={"id": "passed"}), good(timestamp="soon")]
    assert refused_at(batch) == ["/1/verb/id", "/2/timestamp"]
    assert refused_at([good(id=ID), good(id=ID.upper())]) == ["/1/id"]
    with pytest.raises(MalformedPayload):
        post([])


def test_put_takes_its_id_from_statement_id_and_refuses_another() -> None:
    (statement,) = post(good(), "PUT", statementId=ID)
    assert statement["id"] == ID
    assert refused_at(good(id="a1b2c3d4-0000-4000-8000-000000000002"), statementId=ID) == ["/id"]
    with pytest.raises(MalformedPayload, match="statementId"):
        post(good(), "PUT")


def test_ids_are_assigned_from_the_content_and_kept_when_given() -> None:
    first, second = post([good(), good(id=ID)])
    assert second["id"] == ID
    assert first["id"] == post(good())[0]["id"]  # the same statement re-sent: the same id
    assert first["id"] != post(good(timestamp="2026-01-01T00:00:00Z"))[0]["id"]


def test_what_is_accepted_as_the_spec_allows() -> None:
    anonymous = {"objectType": "Group", "member": [{"mbox": "mailto:a@example.edu"}]}
    fine = [
        good(actor=anonymous),
        good(object={"objectType": "SubStatement", **good()}),
        good(attachments=[{"usageType": "http://x.example/u", "fileUrl": "https://f.example/1"}]),
        good(timestamp="2026-01-01T10:00:00.123456+02:00", version="1.0"),
        good(result={"score": {"scaled": -1}}, context={"registration": ID}),
    ]
    for statement in post(fine):
        assert not STATEMENT.errors(statement)


@pytest.mark.parametrize("version", ["1.0", "1.0.0", "1.0.3", "1.0.9", "2.0.0"])
def test_versions_taken(version: str) -> None:
    check_version({"x-experience-api-version": version})


@pytest.mark.parametrize("version", ["", "0.95", "1.1.0", "2.0", "1.0.x"])
def test_versions_refused(version: str) -> None:
    with pytest.raises(MalformedPayload):
        check_version({"x-experience-api-version": version})


AGENTS = st.one_of(
    st.builds(
        lambda n: {"mbox": f"mailto:{n}@example.edu"}, st.from_regex(r"[a-z]{1,8}", fullmatch=True)
    ),
    st.builds(
        lambda n: {"account": {"homePage": "https://lms.example.edu", "name": n}},
        st.text(min_size=1, max_size=8),
    ),
    st.just({"mbox_sha1sum": "0" * 40}),
    st.just({"openid": "https://id.example.edu/x"}),
)
VERBS = st.sampled_from(
    [
        "attempted",
        "initialized",
        "completed",
        "passed",
        "failed",
        "scored",
        "answered",
        "suspended",
        "resumed",
        "terminated",
        "experienced",
    ]
).map(lambda v: {"id": f"http://adlnet.gov/expapi/verbs/{v}"})
NUMBERS = st.one_of(st.integers(-100, 100), st.floats(-100, 100, allow_nan=False))
SCORES = st.fixed_dictionaries(
    {}, optional={"scaled": NUMBERS, "raw": NUMBERS, "min": NUMBERS, "max": NUMBERS}
)
STATEMENTS = st.fixed_dictionaries(
    {"actor": AGENTS, "verb": VERBS, "object": st.just({"id": "https://quiz.example.edu/q/1"})},
    optional={
        "result": st.fixed_dictionaries({}, optional={"score": SCORES, "success": st.booleans()}),
        "timestamp": st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01T00:00:00Z", "now"]),
        "context": st.fixed_dictionaries({}, optional={"registration": st.just(ID)}),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(STATEMENTS, min_size=1, max_size=4))
def test_what_the_decoder_takes_is_valid_and_becomes_valid_records(batch: list[Any]) -> None:
    refused: GatewayError | None = None
    try:
        statements = post(batch)
    except GatewayError as error:
        refused = error
    if refused is not None:
        assert refused.status == 400
        assert refused.errors  # a pointer to what is wrong, always
        return
    for statement in statements:
        assert not STATEMENT.errors(statement)
        score = statement.get("result", {}).get("score", {})
        if "scaled" in score:
            assert -1 <= score["scaled"] <= 1
    normalized = normalize_items(VENDOR, split(statements), CTX, SCHEMAS, include_original=True)
    assert not normalized.rejected
    assert len(normalized.canonical) == len(statements)
    for record in normalized.canonical:
        assert not CANONICAL.errors(record)


def verifier(*credentials: tuple[str, Credential]) -> BasicOrBearer:
    return BasicOrBearer(VerifierContext(credentials, Settings(), lambda: datetime.now(UTC)))


def basic(key: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


def test_basic_key_and_secret_or_a_bearer_token_name_the_tenant() -> None:
    check = verifier(
        ("uni-a", Credential("xapi", "s3cret", principal="key-a", secrets=("s3cret", "next"))),
        ("uni-b", Credential("xapi", "token-b")),
    )
    assert check.head(basic("key-a", "s3cret"), {}, "") == "uni-a"
    assert check.head(basic("key-a", "next"), {}, "") == "uni-a"  # a rotation: both secrets
    assert check.head({"authorization": "Bearer token-b"}, {}, "") == "uni-b"
    for headers in (
        basic("key-a", "wrong"),
        basic("key-b", "s3cret"),
        {"authorization": "Basic !!!"},
        {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
        {"authorization": "Bearer nope"},
        {},
    ):
        with pytest.raises(Unauthorized):
            check.head(headers, {}, "")


def test_one_key_twice_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="twice"):
        verifier(
            ("a", Credential("xapi", "x", principal="k")),
            ("b", Credential("xapi", "y", principal="k")),
        )


@pytest.mark.parametrize("policy", ["drop", "pseudonymize"])
def test_an_email_is_never_an_id_and_follows_the_privacy_policy(policy: str) -> None:
    statements = post(good())
    normalized = normalize_items(VENDOR, split(statements), CTX, SCHEMAS, include_original=True)
    (record,) = normalized.canonical
    sha1 = hashlib.sha1(b"mailto:ada@example.edu", usedforsecurity=False).hexdigest()
    assert record["data"]["learner"]["id"] == sha1  # what an mbox_sha1sum sender gives
    assert record["data"]["learner"]["email"] == "ada@example.edu"
    privacy = Privacy([Tenant("t", privacy=TenantPrivacy(policy, b"k" * 32))])
    text = orjson.dumps(privacy.canonical(record)).decode()
    assert "ada@example.edu" not in text
    assert "Ada Lovelace" not in text  # the actor's name, in the learner and the original
    assert sha1 in text
