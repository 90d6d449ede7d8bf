"""docs/consumers.md as a reader follows it, against the embedded broker and a real gateway.

Each Python client's install block runs as written (it makes a virtual environment of its own and
installs exactly the guide's lines from PyPI, nothing from the project's environment), then the
guide's program runs in it as written. Each kcat line runs as written where kcat is installed
(skipped otherwise; on a librdkafka older than 2.3, such as Debian 12's, kcat runs on the newer
librdkafka of the project's confluent-kafka: see the `kcat` fixture). The topic they read holds
what a consumer meets in production: batches in each codec the gateway can write (zstd, its
default, then lz4 and gzip after a change of `kafka.compression`) and an at-least-once duplicate.

Cost: one virtual environment per client per session, about 4 s each with pip's cache warm, 5 s
without. A consumer group joins in about 5 s with aiokafka and 23 s with librdkafka: the embedded
broker answers a JoinGroup after half the member's session timeout (10 s for aiokafka, 45 s for
librdkafka), and the guide keeps each client's defaults.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat

from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN, Gateway, start_gateway, stop_gateway
from tests.support.kafka import KafkaRecord, TopicReader

GUIDE = ROOT / "docs" / "consumers.md"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANVAS_EVENTS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
# The sections whose Python program the tests run, each in a clean environment of its own.
PYTHON_CLIENTS = ("Python: aiokafka", "Python: confluent-kafka")
KCAT = "kcat"
# Kafka's codec numbers (the low 3 bits of a record batch's attributes).
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


# --- the guide ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A fenced code block of the guide, under the `##` heading it belongs to."""

    section: str
    language: str
    text: str


def guide_blocks() -> list[Block]:
    """Every fenced block of docs/consumers.md, in order, as a reader would copy it."""
    text = GUIDE.read_text(encoding="utf-8")
    blocks: list[Block] = []
    section = ""
    # One pass over headings and fences, so that a `#` line inside a block is never a heading.
    pattern = re.compile(
        r"^## (?P<heading>.+?)$|^```(?P<lang>\w*)\n(?P<code>.*?)^```$", re.M | re.S
    )
    for match in pattern.finditer(text):
        if match["heading"] is not None:
            section = match["heading"]
        else:
            blocks.append(Block(section, match["lang"], match["code"]))
    return blocks


def section_blocks(prefix: str, language: str) -> list[Block]:
    """The blocks in `language` of the section whose heading starts with `prefix`."""
    return [b for b in guide_blocks() if b.section.startswith(prefix) and b.language == language]


def the_block(prefix: str, language: str) -> str:
    blocks = section_blocks(prefix, language)
    assert len(blocks) == 1, f"docs/consumers.md, {prefix!r}: one {language} block expected"
    return blocks[0].text


def test_every_runnable_block_of_the_guide_is_run_by_a_test() -> None:
    blocks = guide_blocks()
    python_sections = {b.section for b in blocks if b.language == "python"}
    assert all(s.startswith(PYTHON_CLIENTS) for s in python_sections), python_sections
    assert len(python_sections) == len(PYTHON_CLIENTS)
    for client in PYTHON_CLIENTS:
        assert "pip install" in the_block(client, "sh")
        the_block(client, "python")
    # Each kcat block has a test below, in this order; a kcat line elsewhere would have none.
    kcat_blocks = [b for b in blocks if b.language == "sh" and "kcat " in b.text]
    assert [b.section for b in kcat_blocks] == [KCAT] * len(KCAT_CHECKS)


# --- the topic the guide's consumers read ------------------------------------------------------


@dataclass(frozen=True)
class GuideTopic:
    """A gateway's canonical topic, and every record on it in the order of its partitions."""

    bootstrap: str
    topic: str
    records: list[KafkaRecord]
    duplicated: KafkaRecord  # on the topic twice, with a record of its key after the second

    @property
    def distinct(self) -> set[str]:
        return {r.json()["id"] for r in self.records}


async def batch_codecs(bootstrap: str, topic: str) -> Counter[str]:
    """How many record batches of `topic` each codec compressed, read from raw Fetch answers:
    no consumer API tells which codec a batch came in."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        cluster = await client.fetch_all_metadata()
        codecs: Counter[str] = Counter()
        for partition in sorted(cluster.partitions_for_topic(topic)):
            leader = cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(100, 1, 10_000_000, 0, [(topic, [(partition, 0, 10_000_000)])])
            response = await client.send(leader, request)
            for _topic, partitions in response.topics:
                for data in partitions:
                    records = MemoryRecords(data[-1])  # the record set is the last field
                    while records.has_next():
                        codecs[CODECS[records.next_batch().compression_type]] += 1
        return codecs
    finally:
        await client.close()


async def post(gateway: Gateway, path: str, body: Any) -> int:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        return (await http.post(path, json=body, headers=AUTH)).status_code


@pytest.fixture(scope="module")
async def guide_topic(
    broker: str, kafka: TopicReader, tmp_path_factory: pytest.TempPathFactory
) -> GuideTopic:
    """Three Caliper attempts and a Canvas batch of two events from a gateway with the default
    compression (zstd); a duplicate of the first Caliper record, as the spool can make one; then
    the same gateway restarted with `kafka.compression = lz4` posts a later event of that record's
    key (so a consumer must read past the duplicate), and restarted with gzip one more attempt."""
    tmp = tmp_path_factory.mktemp("consumers-guide")
    gateway = start_gateway(broker, tmp)
    topic = gateway.canonical_topic
    try:
        for n in (1, 2, 3):
            event = assessment_started(learner=f"guide-{n}")
            assert await post(gateway, "/v1/caliper", envelope(event)) == 200
        batch = {
            "quiz_submission_events": [
                {"client_timestamp": "2026-03-02T09:00:00Z", "event_type": "session_started"},
                {"client_timestamp": "2026-03-02T09:00:05Z", "event_type": "page_blurred"},
            ]
        }
        assert await post(gateway, CANVAS_EVENTS, batch) == 204
        before = await kafka.read(topic, lambda rs: len(rs) >= 5)
    finally:
        stop_gateway(gateway)
    first = next(r for r in before if r.json()["vendor"] == "caliper")
    producer = AIOKafkaProducer(bootstrap_servers=broker, compression_type="zstd")
    await producer.start()
    try:
        headers = list(first.headers.items())
        await producer.send_and_wait(topic, first.value, key=first.key, headers=headers)
    finally:
        await producer.stop()

    same_key = first.json()
    later = assessment_started(learner=same_key["data"]["learner"]["id"].rsplit("/", 1)[-1])
    later["object"]["id"] = later["generated"]["assignable"] = same_key["data"]["assessment"]["id"]
    for compression, event in (("lz4", later), ("gzip", assessment_started(learner="guide-4"))):
        env = {"GATEWAY_KAFKA_COMPRESSION": compression}
        gateway = start_gateway(broker, tmp, env, suffix=gateway.suffix)
        try:
            assert await post(gateway, "/v1/caliper", envelope(event)) == 200
        finally:
            stop_gateway(gateway)

    after = await kafka.read(topic, lambda rs: len(rs) >= len(before) + 3)
    new = next(r for r in after if r.json()["data"]["vendor"].get("event_id") == later["id"])
    assert new.key == first.key  # so it follows the duplicate on their partition
    distinct = {r.json()["id"] for r in after}
    assert len(after) == len(distinct) + 1
    codecs = await batch_codecs(broker, topic)
    assert {"zstd", "lz4", "gzip"} <= set(codecs), codecs
    return GuideTopic(broker, topic, after, first)


def cloudevent(key: bytes | None, value: bytes) -> BaseCloudEvent:
    """A record as the CloudEvents SDK's Kafka binding reads it (structured mode)."""
    headers = {"content-type": b"application/cloudevents+json"}
    return from_structured(KafkaMessage(headers, key, value), JSONFormat())


# --- the Python consumers, each in a clean virtual environment ---------------------------------


def reader_env(**variables: str) -> dict[str, str]:
    """A reader's shell: this run's environment less anything that leads into the project's own
    virtual environment, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    own_bin = Path(sys.prefix) / "bin"
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != own_bin]
    return {**env, "PATH": os.pathsep.join(path), **variables}


def run(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as timeout_expired:
        pytest.fail(f"{command[:2]} still running after {timeout} s: {timeout_expired.stderr!r}")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def clean_environment(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The virtual environment that a client section's install block makes, run as written in
    a directory of its own: one per client for the session."""
    made: dict[str, Path] = {}

    def install(client: str) -> Path:
        if client not in made:
            workdir = tmp_path_factory.mktemp("clean-env")
            # sh, as the fence says: what the guide shows must not need bash.
            run(["sh", "-ec", the_block(client, "sh")], workdir, reader_env(), timeout=600)
            venvs = [cfg.parent for cfg in workdir.glob("*/pyvenv.cfg")]
            assert len(venvs) == 1, "the install block should make one virtual environment"
            config = (venvs[0] / "pyvenv.cfg").read_text()
            assert "include-system-site-packages = false" in config
            made[client] = venvs[0]
        return made[client]

    return install


def run_guide_program(client: str, venv: Path, topic: GuideTopic) -> list[str]:
    """The section's program, saved as consumer.py beside the environment and run in it."""
    script = venv.parent / "consumer.py"
    script.write_text(the_block(client, "python"), encoding="utf-8")
    env = reader_env(
        BOOTSTRAP=topic.bootstrap,
        TOPIC=topic.topic,
        GROUP=f"guide-{uuid.uuid4().hex[:8]}",
        LIMIT=str(len(topic.distinct)),
    )
    result = run([str(venv / "bin" / "python"), str(script)], venv.parent, env, timeout=120)
    return result.stdout.splitlines()


def check_each_event_printed_once(lines: list[str], topic: GuideTopic) -> None:
    ids = [line.split()[-1] for line in lines]
    assert sorted(ids) == sorted(topic.distinct)  # every event once, the duplicate skipped
    by_id = {r.json()["id"]: r.json() for r in topic.records}
    for line in lines:
        time, type_, learner, event_id = line.split(" ")
        record = by_id[event_id]
        assert type_ == record["type"]
        assert datetime.fromisoformat(time) == datetime.fromisoformat(record["time"])
        assert learner == record["data"].get("learner", {}).get("id", "-")
    duplicated = topic.duplicated.json()
    first_line = next(line for line in lines if duplicated["id"] in line)
    assert duplicated["type"] in first_line


def test_the_aiokafka_consumer_of_the_guide_reads_each_event_once(
    guide_topic: GuideTopic, clean_environment: Callable[[str], Path]
) -> None:
    client = "Python: aiokafka"
    venv = clean_environment(client)
    check_each_event_printed_once(run_guide_program(client, venv, guide_topic), guide_topic)


def test_the_confluent_kafka_consumer_of_the_guide_reads_each_event_once(
    guide_topic: GuideTopic, clean_environment: Callable[[str], Path]
) -> None:
    client = "Python: confluent-kafka"
    venv = clean_environment(client)
    check_each_event_printed_once(run_guide_program(client, venv, guide_topic), guide_topic)


# --- kcat --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kcat:
    """kcat as installed here, and the environment its lines run with."""

    features: set[str]
    librdkafka: tuple[int, ...]
    env: dict[str, str]


def kcat_version(env: dict[str, str]) -> tuple[set[str], tuple[int, ...]]:
    """`builtin.features` and the librdkafka version that `kcat -V` reports."""
    shown = run(["kcat", "-V"], ROOT, env, timeout=30).stdout
    features = re.search(r"builtin\.features=([\w,]+)", shown)
    version = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", shown)
    assert features, shown
    assert version, shown
    return set(features[1].split(",")), tuple(int(n) for n in version.groups())


@pytest.fixture(scope="module")
def kcat(tmp_path_factory: pytest.TempPathFactory) -> Kcat:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (apt-get install kcat): its lines of the guide not run")
    env = reader_env()
    features, librdkafka = kcat_version(env)
    if librdkafka < (2, 3):
        # librdkafka 2.0 (Debian 12's kcat) cannot read the embedded broker's ApiVersions answer
        # (a Kafka cluster's it can; the guide says so). Its kcat then runs on the newer
        # librdkafka that confluent-kafka's wheel carries, same soname and ABI: the lines are
        # still kcat's, as written, and this kcat's own features are checked below.
        import confluent_kafka  # noqa: PLC0415 - only this fallback needs the wheel's library

        libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
        bundled = sorted(libs.glob("librdkafka*.so*"))
        assert bundled, f"no librdkafka in {libs}"
        lib = tmp_path_factory.mktemp("librdkafka")
        (lib / "librdkafka.so.1").symlink_to(bundled[0])
        env["LD_LIBRARY_PATH"] = str(lib)
        assert kcat_version(env)[1] >= (2, 3)
    return Kcat(features, librdkafka, env)


def test_the_kcat_installed_here_reads_zstd(kcat: Kcat) -> None:
    assert {"zstd", "lz4", "gzip"} <= kcat.features


def check_records_with_keys(lines: list[str], topic: GuideTopic) -> None:
    """Every record, duplicate included, as `key<TAB>CloudEvent`."""
    events = []
    for line in lines:
        key, value = line.split("\t", 1)
        event = cloudevent(key.encode(), value.encode())
        assert event.get_extension("partitionkey") == key
        events.append(event)
    assert Counter(e.get_id() for e in events) == Counter(r.json()["id"] for r in topic.records)


def check_positions(lines: list[str], topic: GuideTopic) -> None:
    """`partition offset timestamp headers key`, offsets counting from 0 in each partition."""
    rows = [line.split(" ") for line in lines]
    assert Counter((int(p), k) for p, _o, _t, _h, k in rows) == Counter(
        (r.partition, (r.key or b"").decode()) for r in topic.records
    )
    for partition in {r[0] for r in rows}:
        offsets = sorted(int(o) for p, o, _t, _h, _k in rows if p == partition)
        assert offsets == list(range(len(offsets)))
    assert {h for _p, _o, _t, h, _k in rows} == {"content-type=application/cloudevents+json"}
    assert all(int(t) > 1_700_000_000_000 for _p, _o, t, _h, _k in rows)  # ms since 1970


def check_one_type_through_jq(lines: list[str], topic: GuideTopic) -> None:
    """`{time, learner, id}` of the attempts started, duplicate included."""
    started = [
        r.json() for r in topic.records if r.json()["type"] == "edu.assessment.attempt.started"
    ]
    assert started
    shown = [orjson.loads(line) for line in lines]
    expected = [
        {"time": e["time"], "learner": e["data"]["learner"]["id"], "id": e["id"]} for e in started
    ]
    assert sorted(shown, key=orjson.dumps) == sorted(expected, key=orjson.dumps)


# One check per kcat block of the guide, in the guide's order.
KCAT_CHECKS: list[Callable[[list[str], GuideTopic], None]] = [
    check_records_with_keys,
    check_positions,
    check_one_type_through_jq,
]


@pytest.mark.parametrize(
    ("index", "check"), list(enumerate(KCAT_CHECKS)), ids=[c.__name__ for c in KCAT_CHECKS]
)
def test_each_kcat_line_of_the_guide(
    index: int,
    check: Callable[[list[str], GuideTopic], None],
    kcat: Kcat,
    guide_topic: GuideTopic,
) -> None:
    blocks = section_blocks(KCAT, "sh")
    assert len(blocks) == len(KCAT_CHECKS), "docs/consumers.md: a kcat block without a check"
    block = blocks[index].text
    if "| jq " in block and shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq)")
    env = {**kcat.env, "BOOTSTRAP": guide_topic.bootstrap, "TOPIC": guide_topic.topic}
    check(run(["sh", "-ec", block], ROOT, env, timeout=60).stdout.splitlines(), guide_topic)
