"""Every official IMS Caliper fixture through the running gateway.

Positive fixtures (v1p1 and v1p2; envelopes as they are, single events and entities wrapped in an
envelope) are accepted and yield their canonical records; IMS's negative fixtures end in the
dead-letter topic, never in the canonical one. The fixtures are LGPL-3.0: see
tests/fixtures/caliper/in/ims/SOURCE.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.canonical import content_digest, record_id
from tests.support.caliper import IMS, as_envelope, negative_fixtures, positive_fixtures
from tests.support.gateway import TOKEN, Gateway
from tests.support.kafka import KafkaRecord, TopicReader

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


def canonical_id(item: dict[str, Any]) -> str:
    return record_id("demo", "caliper", item["id"], content_digest(item))


async def post_all(client: httpx.AsyncClient, paths: list[Path]) -> list[Any]:
    items: list[Any] = []
    for path in paths:
        body, its_items = as_envelope(path)
        response = await client.post("/v1/caliper", content=orjson.dumps(body), headers=AUTH)
        assert response.status_code == 200, (path.name, response.text)
        items.extend(its_items)
    return items


async def test_every_positive_ims_fixture_yields_its_canonical_records(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    paths = positive_fixtures()
    assert len(paths) >= 70
    items = await post_all(client, paths)
    expected = {canonical_id(item) for item in items}
    records = await kafka.read(
        gateway.canonical_topic, lambda rs: expected <= {r.json()["id"] for r in rs}
    )
    published = {r.json()["id"] for r in records}
    missing = [item["id"] for item in items if canonical_id(item) not in published]
    assert not missing, f"not published: {missing}"
    dead = await kafka.settle(gateway.deadletter_topic, quiet=0.5)
    rejected = [r.json()["original"] for r in dead if r.json().get("original") in items]
    assert not rejected, [orjson.loads(orjson.dumps(r)).get("id") for r in rejected]


@dataclass(frozen=True)
class Published:
    """What the gateway published after every negative fixture was posted once."""

    deadletters: list[dict[str, Any]]
    canonical_ids: set[str]


@pytest.fixture(scope="module")
async def negatives_published(gateway: Gateway, kafka: TopicReader) -> Published:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        items = await post_all(client, negative_fixtures())
    digests = {content_digest(item) for item in items}

    def all_dead_lettered(records: list[KafkaRecord]) -> bool:
        return digests <= {content_digest(r.json().get("original")) for r in records}

    dead = await kafka.read(gateway.deadletter_topic, all_dead_lettered)
    canonical = await kafka.settle(gateway.canonical_topic, quiet=0.5)
    return Published([r.json() for r in dead], {r.json()["id"] for r in canonical})


@pytest.mark.parametrize("path", negative_fixtures(), ids=lambda p: p.name)
def test_negative_ims_fixture_is_dead_lettered(negatives_published: Published, path: Path) -> None:
    (item,) = as_envelope(path)[1]
    digest = content_digest(item)
    letters = [
        d for d in negatives_published.deadletters if content_digest(d.get("original")) == digest
    ]
    assert letters, f"{path.name} was not dead-lettered"
    assert letters[0]["reason"] == "schema_violation"
    assert letters[0]["errors"], letters[0]
    if isinstance(item.get("id"), str):
        assert canonical_id(item) not in negatives_published.canonical_ids


async def test_unparseable_fixture_gets_400(client: httpx.AsyncClient) -> None:
    body = (IMS / "v1p2" / "commonErrorFixtures" / "caliperEntity-BadJson.json").read_bytes()
    response = await client.post("/v1/caliper", content=body, headers=AUTH)
    assert response.status_code == 400
