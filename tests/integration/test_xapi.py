"""xAPI end to end: ADL's TinCanPython (`tincan`, unchanged) talks to the gateway as to an LRS over
real HTTP, and what a Kafka consumer reads back; the spec's bad cases get the spec's status.

TinCanPython 1.0.0 runs on Python 3.11 as published: no shim is needed.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from tincan import Activity, Agent, RemoteLRS, Result, Score, Statement, Verb

from tests.support.gateway import Gateway, running_gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import CANONICAL

STATEMENTS = "/xapi/statements"
BASIC = "Basic " + base64.b64encode(b"dev-xapi:dev-xapi-secret").decode()
HEADERS = {"Authorization": BASIC, "X-Experience-API-Version": "1.0.3"}
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "xapi" / "in"


def lrs(gateway: Gateway, **auth: str) -> RemoteLRS:
    credentials = auth or {"username": "dev-xapi", "password": "dev-xapi-secret"}
    return RemoteLRS(endpoint=f"{gateway.url}/xapi/", version="1.0.1", **credentials)


def statement(verb: str = "passed", raw: float = 8, learner: str = "") -> Statement:
    return Statement(
        actor=Agent(name="Ada", mbox=f"mailto:{learner or uuid.uuid4().hex}@example.edu"),
        verb=Verb(id=f"http://adlnet.gov/expapi/verbs/{verb}"),
        object=Activity(id=f"https://quiz.example.edu/quizzes/{uuid.uuid4()}"),
        result=Result(score=Score(raw=raw, min=0, max=10, scaled=raw / 10), success=True),
    )


async def records_of(kafka: TopicReader, gateway: Gateway, ids: set[str]) -> list[dict[str, Any]]:
    def found(records: list[KafkaRecord]) -> bool:
        return ids <= {r.json()["data"]["vendor"].get("event_id") for r in records}

    records = await kafka.read(gateway.canonical_topic, found)
    return [r.json() for r in records if r.json()["data"]["vendor"].get("event_id") in ids]


async def test_tincan_about_save_statement_and_save_statements(
    gateway: Gateway, kafka: TopicReader
) -> None:
    remote = lrs(gateway)
    about = remote.about()
    assert about.success, about.data
    assert "1.0.3" in about.content.version
    one = statement()
    saved = remote.save_statement(one)  # no id: POST, the gateway assigns it
    assert saved.success, saved.data
    assert one.id is not None  # the id the gateway answered, set by TinCanPython
    batch = [statement("attempted"), statement("answered"), statement("failed", raw=2)]
    saved = remote.save_statements(batch)
    assert saved.success, saved.data
    ids = {str(one.id), *(str(s.id) for s in batch)}
    assert len(ids) == 4
    with_id = statement("completed")
    with_id.id = str(uuid.uuid4())
    assert remote.save_statement(with_id).success  # an id: PUT, 204
    bearer = lrs(gateway, auth="Bearer dev-token")
    assert bearer.save_statement(statement()).success
    records = await records_of(kafka, gateway, {*ids, str(with_id.id)})
    assert len(records) == 5
    by_id = {r["data"]["vendor"]["event_id"]: r for r in records}
    assert by_id[str(one.id)]["type"] == "edu.assessment.attempt.graded"
    assert by_id[str(batch[0].id)]["type"] == "edu.assessment.attempt.started"
    assert by_id[str(batch[1].id)]["type"] == "edu.assessment.item.completed"
    assert by_id[str(with_id.id)]["type"] == "edu.assessment.attempt.graded"
    for record in records:
        assert not CANONICAL.errors(record)
        # The learner is the SHA-1 of the mbox, never the address (dev keeps the email field).
        assert "@" not in record["data"]["learner"]["id"]


async def test_a_resent_id_is_idempotent_and_other_content_is_409(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    body = orjson.loads((FIXTURES / "cmi5-spec-failed.json").read_bytes())
    body["id"] = str(uuid.uuid4())
    first = await client.post(STATEMENTS, json=body, headers=HEADERS)
    again = await client.post(STATEMENTS, json=body, headers=HEADERS)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == [body["id"]]
    assert first.headers["x-experience-api-version"] == "1.0.3"
    changed = {**body, "result": {**body["result"], "success": True}}
    conflict = await client.post(STATEMENTS, json=changed, headers=HEADERS)
    assert conflict.status_code == 409
    assert conflict.headers["x-experience-api-version"] == "1.0.3"
    put = await client.put(
        STATEMENTS, params={"statementId": body["id"]}, json=changed, headers=HEADERS
    )
    assert put.status_code == 409
    records = await kafka.settle(gateway.canonical_topic)
    mine = [r.json() for r in records if r.json()["data"]["vendor"].get("event_id") == body["id"]]
    assert len(mine) == 1
    assert mine[0]["data"]["vendor"]["success"] is False


async def test_a_voiding_statement_is_its_own_type(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    target = str(uuid.uuid4())
    voiding = {
        "actor": {"mbox": "mailto:teacher@example.edu"},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/voided"},
        "object": {"objectType": "StatementRef", "id": target},
    }
    answer = await client.post(STATEMENTS, json=voiding, headers=HEADERS)
    assert answer.status_code == 200
    (record,) = await records_of(kafka, gateway, set(answer.json()))
    assert record["type"] == "edu.event.voided"
    assert record["subject"] == target


def good() -> dict[str, Any]:
    return {
        "actor": {"account": {"homePage": "https://lms.example.edu", "name": "s1"}},
        "verb": {"id": "http://adlnet.gov/expapi/verbs/scored"},
        "object": {"id": "https://quiz.example.edu/q/1"},
        "result": {"score": {"raw": 5, "min": 0, "max": 10}},
    }


BAD: dict[str, Any] = {
    "no actor": {k: v for k, v in good().items() if k != "actor"},
    "no verb": {k: v for k, v in good().items() if k != "verb"},
    "no object": {k: v for k, v in good().items() if k != "object"},
    "no identifier": {**good(), "actor": {"name": "Ada"}},
    "two identifiers": {
        **good(),
        "actor": {"mbox": "mailto:a@example.edu", "openid": "https://id.example.edu/a"},
    },
    "verb id not an IRI": {**good(), "verb": {"id": "passed"}},
    "bad timestamp": {**good(), "timestamp": "yesterday"},
    "scaled over 1": {**good(), "result": {"score": {"scaled": 1.5}}},
    "raw over max": {**good(), "result": {"score": {"raw": 11, "min": 0, "max": 10}}},
    "unknown property": {**good(), "mood": "happy"},
    "attachment without fileUrl": {
        **good(),
        "attachments": [{"usageType": "http://x.example/u", "contentType": "image/png"}],
    },
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_the_specs_bad_cases_are_400_for_the_whole_batch(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader, case: str
) -> None:
    marker = str(uuid.uuid4())
    fine = {**good(), "id": marker}
    answer = await client.post(STATEMENTS, json=[fine, BAD[case]], headers=HEADERS)
    assert answer.status_code == 400, answer.text
    assert answer.headers["x-experience-api-version"] == "1.0.3"
    assert answer.json()["errors"][0]["pointer"].startswith("/1")
    records = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    assert all(r.json()["data"]["vendor"].get("event_id") != marker for r in records)


@pytest.mark.parametrize("version", ["", "0.95", "1.1.0", "3"])
async def test_a_wrong_version_header_is_400(client: httpx.AsyncClient, version: str) -> None:
    headers = {**HEADERS, "X-Experience-API-Version": version}
    answer = await client.post(STATEMENTS, json=good(), headers=headers)
    assert answer.status_code == 400
    assert answer.headers["x-experience-api-version"] == "1.0.3"


async def test_multipart_attachments_are_refused_and_credentials_checked(
    client: httpx.AsyncClient,
) -> None:
    multipart = {**HEADERS, "Content-Type": "multipart/mixed; boundary=abc"}
    answer = await client.post(STATEMENTS, content=b"--abc--", headers=multipart)
    assert answer.status_code == 400
    assert "fileUrl" in answer.json()["detail"]
    wrong = {**HEADERS, "Authorization": "Basic " + base64.b64encode(b"dev-xapi:no").decode()}
    refused = await client.post(STATEMENTS, json=good(), headers=wrong)
    assert refused.status_code == 401
    assert refused.headers["x-experience-api-version"] == "1.0.3"
    assert refused.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
async def test_every_recorded_emitter_over_http(client: httpx.AsyncClient, path: Path) -> None:
    body = path.read_bytes()  # noqa: ASYNC240  # a small fixture, read once
    answer = await client.post(
        STATEMENTS,
        content=body,
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    golden = orjson.loads((path.parent.parent / "golden" / path.name).read_bytes())
    if "refused" in golden:
        assert answer.status_code == golden["refused"]["status"]
    else:
        assert answer.status_code == 200
        ids = [r["data"]["vendor"]["event_id"] for r in golden["canonical"]]
        assert answer.json() == ids


async def test_the_openapi_document_describes_the_lrs_routes(admin: httpx.AsyncClient) -> None:
    paths = (await admin.get("/openapi.json")).json()["paths"]
    statements, about = paths["/xapi/statements"], paths["/xapi/about"]
    assert {"200", "400", "401", "409"} <= set(statements["post"]["responses"])
    assert {"204", "400", "409"} <= set(statements["put"]["responses"])
    assert "ids" in statements["post"]["responses"]["200"]["description"]
    assert "200" in about["get"]["responses"]


def counted(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text `metrics` (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_statements_requests_are_measured_and_logged_as_ingest_requests(
    client: httpx.AsyncClient, admin: httpx.AsyncClient, gateway: Gateway
) -> None:
    before = (await admin.get("/metrics")).text
    body = [{**good(), "id": str(uuid.uuid4())} for _ in range(3)]
    answer = await client.post(STATEMENTS, json=body, headers=HEADERS)
    assert answer.status_code == 200
    after = (await admin.get("/metrics")).text
    published = {"vendor": "xapi", "outcome": "published"}
    assert (
        counted(after, "gateway_events_total", **published)
        - counted(before, "gateway_events_total", **published)
        == 3
    )
    assert counted(after, "gateway_requests_total", vendor="xapi", status="200") > counted(
        before, "gateway_requests_total", vendor="xapi", status="200"
    )
    request_id = answer.headers["x-request-id"]
    (line,) = [line for line in gateway.log_lines() if line.get("request_id") == request_id]
    assert line["route"] == STATEMENTS
    assert line["accepted"] == 3


@pytest.fixture(scope="module")
def limited(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {
        "GATEWAY_RATE_LIMIT_ENABLED": "true",
        "GATEWAY_RATE_LIMIT_RATE_PER_SECOND": "0.001",
        "GATEWAY_RATE_LIMIT_BURST": "2",
    }
    yield from running_gateway(broker, tmp_path_factory.mktemp("xapi-limited"), env)


async def test_the_tenants_rate_limit_applies_to_statements(limited: Gateway) -> None:
    async with httpx.AsyncClient(base_url=limited.url, timeout=30) as http:
        answers = [
            await http.post(STATEMENTS, json={**good(), "id": str(uuid.uuid4())}, headers=HEADERS)
            for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert re.fullmatch(r"\d+", answers[2].headers["retry-after"])
    assert answers[2].headers["x-experience-api-version"] == "1.0.3"
