"""What real emitters publish, sent to a running gateway as each sender sends it.

Every payload of tests/fixtures/caliper/in/emitters/ (Canvas Live Events, Blackboard Learn, Open edX
event-routing-backends, HMH; sources and licenses in SOURCES.md there) is posted once: the sender
gets its success answer (Caliper: 200, empty body), every event and entity of it is published on
the canonical topic as the record of its golden file (tests/fixtures/caliper/golden/emitters/,
made by tests/unit/test_golden.py with a fixed tenant and receive time), and none is
dead-lettered. Canvas's quiz page, which posts quiz submission events to Canvas's own endpoint,
is sent there: 204, one record per event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Final

import httpx
import orjson
import pytest

from gateway.canonical import content_digest, record_id
from tests.support.caliper import EmitterRequest, emitter_requests, quiz_page_deliveries
from tests.support.gateway import TOKEN, Gateway
from tests.support.kafka import KafkaRecord, TopicReader
from tests.support.schemas import SCHEMAS

CANONICAL: Final = SCHEMAS.get("canonical/event.schema.json")
REQUESTS: Final = emitter_requests()
# The Canvas types of the quiz page's events (docs/canonical-record.md, Canvas mapping).
QUIZ_PAGE_TYPES: Final = {
    "session_started": "edu.assessment.session.started",
    "question_viewed": "edu.assessment.item.viewed",
    "page_blurred": "edu.assessment.session.focus_lost",
    "page_focused": "edu.assessment.session.focus_gained",
    "question_flagged": "edu.assessment.item.flagged",
}
# What varies between the golden run and this one: the tenant, and what is derived from it or
# from the receive time.
PER_RUN: Final = ("id", "source", "tenant", "receivedat", "partitionkey")


def expected_id(item: dict[str, Any]) -> str:
    digest = content_digest(item)
    identity = item.get("id")
    return record_id("demo", "caliper", identity or f"sha256:{digest}", digest)


def golden_records(sent: EmitterRequest) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = orjson.loads(sent.golden.read_bytes())["canonical"]
    return records


def without_run_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in PER_RUN}


@dataclass(frozen=True)
class Published:
    """What the gateway answered and published once every emitter payload was posted."""

    answers: dict[str, tuple[int, bytes]]
    canonical: dict[str, dict[str, Any]]
    dead_originals: list[Any]


@pytest.fixture(scope="module")
async def published(gateway: Gateway, kafka: TopicReader) -> Published:
    answers: dict[str, tuple[int, bytes]] = {}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        for sent in REQUESTS:
            response = await client.post(
                "/v1/caliper",
                content=sent.body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )
            answers[sent.label] = (response.status_code, response.content)
    expected = {expected_id(item) for sent in REQUESTS for item in sent.envelope["data"]}

    def all_published(records: list[KafkaRecord]) -> bool:
        return expected <= {r.json()["id"] for r in records}

    records = await kafka.read(gateway.canonical_topic, all_published, within=30)
    canonical = {r.json()["id"]: r.json() for r in records if r.json()["id"] in expected}
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    return Published(answers, canonical, [r.json().get("original") for r in dead])


@pytest.mark.parametrize("sent", REQUESTS, ids=lambda r: r.label)
def test_real_emitter_payload_is_taken_and_every_event_published(
    published: Published, sent: EmitterRequest
) -> None:
    assert published.answers[sent.label] == (200, b""), published.answers[sent.label]
    items = sent.envelope["data"]
    golden = golden_records(sent)
    assert len(golden) == len(items)
    for item, expected in zip(items, golden, strict=True):
        record = published.canonical.get(expected_id(item))
        assert record is not None, f"{sent.label}: {item.get('id')} was not published"
        assert not CANONICAL.errors(record), CANONICAL.errors(record)
        assert without_run_fields(record) == without_run_fields(expected)
        assert item not in published.dead_originals, f"{sent.label}: dead-lettered"


async def test_canvas_quiz_page_deliveries_are_taken_as_the_page_sends_them(
    gateway: Gateway, kafka: TopicReader
) -> None:
    """No `event_data` key on focus and blur, camelCase `questionId`, arrays of question ids on
    `question_viewed`: 204 for every delivery, and one record per event."""
    n = uuid.uuid4().int
    course, quiz, submission = n % 10**6 + 1, n // 10**6 % 10**6 + 1, n // 10**12 % 10**9 + 1
    path = f"/api/v1/courses/{course}/quizzes/{quiz}/submissions/{submission}/events"
    deliveries = quiz_page_deliveries()
    sent = [event for body in deliveries for event in body["quiz_submission_events"]]
    assert any("event_data" not in event for event in sent)  # as the page sends them
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        for body in deliveries:
            response = await client.post(
                path,
                content=orjson.dumps(body),
                headers={
                    "Content-Type": "application/json; charset=UTF-8",
                    "Accept": "application/json; charset=UTF-8",
                    "Authorization": f"Bearer {TOKEN}",
                },
            )
            assert response.status_code == 204, response.text

    def ours(records: list[KafkaRecord]) -> list[dict[str, Any]]:
        return [r.json() for r in records if r.json().get("subject") == str(submission)]

    records = await kafka.read(gateway.canonical_topic, lambda rs: len(ours(rs)) >= len(sent))
    mine = ours(records)
    assert sorted(r["type"] for r in mine) == sorted(QUIZ_PAGE_TYPES[e["event_type"]] for e in sent)
    for record in mine:
        assert not CANONICAL.errors(record), CANONICAL.errors(record)
