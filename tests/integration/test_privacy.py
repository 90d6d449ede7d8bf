"""The PII policy end to end: real deliveries full of learners' names and emails posted to a real
`gateway serve`, and what a Kafka consumer of either topic then reads. Under `pseudonymize` and
`drop` no name, email or username is on any topic, learner ids still are, and pseudonyms are the
same for the same learner wherever they appear (so consumers can still join on them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.privacy import pseudonym
from gateway.settings import load_settings
from tests.support.caliper import AUTH, assessment_started, envelope
from tests.support.gateway import ROOT, Gateway, running_gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.pearson import delivery, form, fresh_exam_completed

KEY_ENV = {"PRIVACY_TEST_KEY": "a pseudonymization key for the tests"}
PSEUDONYMIZE = {
    "GATEWAY_PRIVACY_POLICY": "pseudonymize",
    "GATEWAY_PRIVACY_SECRET_ENV": "PRIVACY_TEST_KEY",
    **KEY_ENV,
}
EMAIL, NAME = "jane.doe@example.edu", "Jane Doe"
PEARSON = fresh_exam_completed()["actor"]  # John Smith, john.smith@domain.com, jsmith123
PERSONAL = [EMAIL, NAME, PEARSON["firstName"], PEARSON["lastName"]]
PERSONAL += [PEARSON["emailAddress"], PEARSON["userName"]]


def started_gateway(broker: str, tmp: Any, policy: dict[str, str]) -> Iterator[Gateway]:
    env = {"GATEWAY_CANONICAL_INCLUDE_ORIGINAL": "true", **policy}
    yield from running_gateway(broker, tmp, env)


@pytest.fixture(scope="module")
def pseudonymizing(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from started_gateway(broker, tmp_path_factory.mktemp("pseudo"), PSEUDONYMIZE)


@pytest.fixture(scope="module")
def dropping(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # gateway.dev.toml keeps (its data is made up): drop is the default of any other config.
    policy = {"GATEWAY_PRIVACY_POLICY": "drop"}
    yield from started_gateway(broker, tmp_path_factory.mktemp("drop"), policy)


def demo_key() -> bytes:
    """The demo tenant's key, as the gateway derives it from the shared one."""
    env = {**PSEUDONYMIZE}
    return load_settings(ROOT / "gateway.dev.toml", environ=env).tenants[0].privacy.key


def named_learner_event() -> dict[str, Any]:
    """A Caliper event whose learner is a Person with a name and an email (in an extension)."""
    event = assessment_started(learner=uuid.uuid4().hex)
    event["actor"]["name"] = NAME
    event["actor"]["extensions"] = {"email": EMAIL}
    event["generated"]["assignee"] = dict(event["actor"])  # the learner, named, in the record
    return event


async def send_everything(url: str) -> dict[str, str]:
    """One of each: a Caliper event, a schema-invalid one, a malformed body, a Pearson delivery
    and a Pearson delivery whose payload is not JSON. Returns the ids to find them by."""
    marker = uuid.uuid4().hex
    good, bad = named_learner_event(), named_learner_event()
    bad["action"] = "Teleported"  # not an action of the AssessmentProfile: dead-lettered
    pearson = delivery(fresh_exam_completed())
    broken = delivery(f'{{"actor": {{"emailAddress": "{EMAIL}"')
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        caliper = {**AUTH, "Content-Type": "application/json", "X-Request-Id": f"{marker}-caliper"}
        answer = await http.post(
            "/v1/caliper", content=orjson.dumps(envelope(good, bad)), headers=caliper
        )
        assert answer.status_code == 200
        malformed = f'{{"sensor": "s", "actor": {{"name": "{NAME}", "email": "{EMAIL}"}},'
        headers = {**AUTH, "Content-Type": "application/json", "X-Request-Id": f"{marker}-body"}
        answer = await http.post("/v1/caliper", content=malformed.encode(), headers=headers)
        assert answer.status_code == 400
        for name, fields in (("pearson", pearson), ("broken", broken)):
            headers = {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Request-Id": f"{marker}-{name}",
            }
            answer = await http.post("/v1/pearson/eventing", content=form(fields), headers=headers)
            assert answer.status_code == 200
    return {"marker": marker, "good": good["id"], "message": pearson["MESSAGE-ID"]}


async def read_back(
    kafka: TopicReader, gateway: Gateway, sent: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The canonical records and dead letters of what `send_everything` sent."""

    def mine(records: list[KafkaRecord]) -> list[dict[str, Any]]:
        bodies = [r.json() for r in records]
        return [
            b
            for b in bodies
            if sent["marker"] in str(b.get("request_id", ""))
            or b.get("data", {}).get("vendor", {}).get("event_id") == sent["good"]
            or b.get("data", {}).get("vendor", {}).get("message_id") == sent["message"]
        ]

    canonical = await kafka.read(gateway.canonical_topic, lambda rs: len(mine(rs)) >= 2)
    dead = await kafka.read(gateway.deadletter_topic, lambda rs: len(mine(rs)) >= 3)
    return mine(canonical), mine(dead)


def by_vendor(records: list[dict[str, Any]], vendor: str) -> dict[str, Any]:
    (record,) = [r for r in records if r["vendor"] == vendor]
    return record


async def test_pseudonymize_replaces_every_name_and_email_with_a_stable_pseudonym(
    pseudonymizing: Gateway, kafka: TopicReader
) -> None:
    sent = await send_everything(pseudonymizing.url)
    canonical, dead = await read_back(kafka, pseudonymizing, sent)
    assert len(canonical) == 2
    assert len(dead) == 3
    everything = orjson.dumps(canonical + dead).decode()
    for personal in PERSONAL:
        assert personal not in everything

    key = demo_key()
    caliper = by_vendor(canonical, "caliper")["data"]
    assert caliper["learner"]["name"] == pseudonym(key, NAME)
    assert caliper["learner"]["id"].startswith("https://example.edu/users/")  # ids stay
    assert caliper["original"]["actor"]["extensions"]["email"] == pseudonym(key, EMAIL)
    pearson = by_vendor(canonical, "pearson")["data"]
    actor = pearson["original"]["PAYLOAD"]["actor"]
    assert actor["emailAddress"] == pseudonym(key, PEARSON["emailAddress"])
    assert actor["userName"] == pseudonym(key, PEARSON["userName"])
    assert pearson["learner"] == {"id": "7777777", "type": "user"}

    (invalid,) = [d for d in dead if d["vendor"] == "caliper" and "original" in d]
    # The same learner's pseudonym in a dead letter as in a record: joins still work.
    assert invalid["original"]["actor"]["name"] == pseudonym(key, NAME)
    (body,) = [d for d in dead if "original_body" in d]
    assert pseudonym(key, EMAIL) in body["original_body"]


async def test_drop_leaves_no_personal_field_and_keeps_the_rest(
    dropping: Gateway, kafka: TopicReader
) -> None:
    sent = await send_everything(dropping.url)
    canonical, dead = await read_back(kafka, dropping, sent)
    everything = orjson.dumps(canonical + dead).decode()
    for personal in PERSONAL:
        assert personal not in everything
    assert "pseudo:" not in everything
    pearson = by_vendor(canonical, "pearson")["data"]
    assert pearson["original"]["PAYLOAD"]["actor"] == {"id": "7777777", "type": "user"}
    caliper = by_vendor(canonical, "caliper")["data"]
    assert set(caliper["learner"]) == {"id", "type"}
    assert caliper["original"]["object"]["name"] == "Quiz One"  # an assessment's name stays
    (invalid,) = [d for d in dead if d["vendor"] == "caliper" and "original" in d]
    assert invalid["original"]["action"] == "Teleported"  # the cause is still there to see
