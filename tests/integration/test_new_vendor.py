"""Adding a vendor takes one package and one registration, no shared module (issue #14, README
"Adding a vendor"): `quizbox`, a vendor written at test time in a temporary folder outside this
project, with its schema folder, settings section and personal-data key of its own, registered
through the entry-point group `assessment_gateway.vendors` by a `.dist-info` beside it (which is
what `pip install` of a package declaring the entry point leaves), served by a real
`gateway serve` on PYTHONPATH, its records and dead letters read back from the real broker.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.vendors import ENTRY_POINT_GROUP, registry
from tests.support.gateway import ROOT, Gateway, running_gateway
from tests.support.kafka import TopicReader
from tests.support.schemas import SCHEMAS

TOKEN = "quizbox-test-token"
LEARNER_NAME = "Ada Lovelace"

# The whole vendor: what a newcomer writes, using the contract and the shared services only.
PACKAGE = '''"""Quizbox: batches of quiz activity events on `POST /v1/quizbox`, a bearer token.

A vendor written by tests/integration/test_new_vendor.py to show that one package is a vendor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.auth.bearer import BearerOrRaw
from gateway.canonical import CanonicalEvent, EventType, NormalizeContext, normalize_time
from gateway.errors import MalformedPayload
from gateway.settings import Settings, SettingsSection
from gateway.vendors.base import Inbound, Item, Reply, Vendor


@dataclass(frozen=True)
class QuizboxSettings:
    """`[quizbox]`."""

    greeting: str = "hello"


def decode(inbound: Inbound) -> Any:
    try:
        return orjson.loads(inbound.body)
    except orjson.JSONDecodeError:
        raise MalformedPayload("not JSON") from None


def split(batch: Any) -> Sequence[Item]:
    return [
        Item(event, "event", f"/events/{i}", event.get("id") if isinstance(event, dict) else None)
        for i, event in enumerate(batch["events"])
    ]


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    event = item.payload
    data = {
        "action": event["verb"],
        "learner": {"id": event["player"]["id"]},
        "vendor": {"name": "quizbox", "event_type": event["verb"], "event_id": event["id"]},
    }
    time = normalize_time(event["at"], "/at")
    return [CanonicalEvent(EventType.ACTIVITY, time, item.identity or "", data)]


def describe(settings: Settings) -> Reply:
    greeting = settings.section(QuizboxSettings).greeting
    return Reply(200, orjson.dumps({"greeting": greeting}), "application/json")


VENDOR = Vendor(
    name="quizbox",
    path="/v1/quizbox",
    verifier=BearerOrRaw,
    schema_file="quizbox.schema.json",
    envelope_schema="batch",
    item_schemas=("event",),
    decode=decode,
    split=split,
    normalize=normalize,
    success=Reply(202),
    describe=describe,
    schema_dir=Path(__file__).parent / "schemas",
    settings=SettingsSection("quizbox", QuizboxSettings),
    person_keys=frozenset({"player"}),
)
'''

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://quizbox.invalid/schemas/quizbox/quizbox.schema.json",
    "$defs": {
        "batch": {
            "type": "object",
            "required": ["events"],
            "properties": {"events": {"type": "array", "minItems": 1}},
        },
        "event": {
            "type": "object",
            "required": ["id", "verb", "player", "at"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "verb": {"type": "string", "minLength": 1},
                "player": {
                    "type": "object",
                    "required": ["id"],
                    "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                },
                "at": {"type": "string", "format": "date-time"},
            },
        },
    },
}

CONFIG = f"""
[kafka]
enable_idempotence = false
topic_partitions = 3
topic_replication_factor = 1

[logging]
format = "json"

[quizbox]
greeting = "hello from the file"

[[tenants]]
name = "arcade"

[[tenants.credentials]]
vendor = "quizbox"
secret = "{TOKEN}"
"""


def install(site: Path) -> None:
    """The package and its registration, as an installed distribution would leave them."""
    package = site / "quizbox"
    (package / "schemas").mkdir(parents=True)
    (package / "__init__.py").write_text(PACKAGE, encoding="utf-8")
    (package / "schemas" / "quizbox.schema.json").write_bytes(orjson.dumps(SCHEMA))
    dist = site / "quizbox-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: quizbox\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nquizbox = quizbox\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site-packages")
    install(folder)
    return folder


@pytest.fixture(scope="module")
def quizbox(broker: str, site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    path = os.pathsep.join(filter(None, (str(site), os.environ.get("PYTHONPATH"))))
    env = {"PYTHONPATH": path, "GATEWAY_QUIZBOX_GREETING": "hello from a variable"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("quizbox"), env, config=CONFIG)


@pytest.fixture
async def http(quizbox: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=quizbox.url, headers=headers, timeout=30) as client:
        yield client


def event(**changes: Any) -> dict[str, Any]:
    found = {
        "id": f"qb-{uuid.uuid4().hex}",
        "verb": "answered",
        "player": {"id": "p-7", "name": LEARNER_NAME},
        "at": "2026-11-26T10:00:00Z",
    }
    return {**found, **changes}


def test_the_vendor_is_outside_the_project_and_unknown_to_it(site: Path) -> None:
    assert not (site / "quizbox").is_relative_to(ROOT)
    assert "quizbox" not in registry()  # this process never had it on its path


async def test_its_event_becomes_a_canonical_record_in_kafka(
    http: httpx.AsyncClient, quizbox: Gateway, kafka: TopicReader
) -> None:
    sent = event()
    answer = await http.post("/v1/quizbox", content=orjson.dumps({"events": [sent]}))
    assert answer.status_code == 202, answer.text
    records = await kafka.read(
        quizbox.canonical_topic, lambda rs: any(sent["id"].encode() in r.value for r in rs)
    )
    (record,) = [r.json() for r in records if sent["id"].encode() in r.value]
    assert record["vendor"] == "quizbox"
    assert record["tenant"] == "arcade"
    assert record["source"] == "/tenants/arcade/vendors/quizbox"
    assert record["type"] == "edu.activity.generic"
    assert record["time"] == "2026-11-26T10:00:00.000Z"
    assert record["data"] == {
        "action": "answered",
        "learner": {"id": "p-7"},
        "vendor": {"name": "quizbox", "event_type": "answered", "event_id": sent["id"]},
    }
    # The consumers' contract names no vendor in particular: a new one's records conform to it.
    assert not SCHEMAS.get("canonical/event.schema.json").errors(record)


async def test_an_invalid_event_is_dead_lettered_under_its_privacy_keys(
    http: httpx.AsyncClient, quizbox: Gateway, kafka: TopicReader
) -> None:
    bad = event(at="yesterday")  # not a date-time: its own schema refuses it
    answer = await http.post("/v1/quizbox", content=orjson.dumps({"events": [bad]}))
    assert answer.status_code == 202, answer.text  # one bad event costs the sender nothing
    letters = await kafka.read(
        quizbox.deadletter_topic, lambda rs: any(bad["id"].encode() in r.value for r in rs)
    )
    (letter,) = [r.json() for r in letters if bad["id"].encode() in r.value]
    assert letter["vendor"] == "quizbox"
    assert letter["tenant"] == "arcade"
    assert letter["reason"] == "schema_violation"
    assert letter["where"] == "/events/0"
    assert [e["path"] for e in letter["errors"]] == ["/at"]
    # `player` is a person by the vendor's say: its name is dropped (the default policy).
    assert letter["original"]["player"] == {"id": "p-7"}
    assert LEARNER_NAME not in orjson.dumps(letter).decode()


async def test_its_route_its_scheme_and_its_settings_are_served(
    http: httpx.AsyncClient, quizbox: Gateway
) -> None:
    refused = await http.post(
        "/v1/quizbox",
        content=orjson.dumps({"events": [event()]}),
        headers={"Authorization": "Bearer not-the-token"},
    )
    assert refused.status_code == 401
    malformed = await http.post("/v1/quizbox", content=b"{}")  # no `events`: its envelope
    assert malformed.status_code == 400
    described = await http.get("/v1/quizbox")  # `describe`, reading its `[quizbox]` section
    assert described.json() == {"greeting": "hello from a variable"}
    async with httpx.AsyncClient(base_url=quizbox.admin_url, timeout=30) as admin:
        document = (await admin.get("/openapi.json")).json()
    assert "post" in document["paths"]["/v1/quizbox"]
    started = [line for line in quizbox.log_lines() if line["event"] == "started"]
    assert "quizbox" in started[0]["vendors"]
