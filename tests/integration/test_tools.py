"""The consumers' and integrators' commands as a user runs them, against the embedded broker and
a real gateway: `gateway tail`, `gateway schema`, `serve --log-format console` (the consumers of
docs/consumers.md run in tests/integration/test_consumers_guide.py).

The module has a gateway of its own (its own topics), so that what `tail` must print is exactly
what these tests posted.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.schemas import SCHEMA_DIR
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT, TOKEN, Gateway, read_until, running_gateway
from tests.support.http import free_port
from tests.support.kafka import TopicReader

GATEWAY = [sys.executable, "-m", "gateway.cli"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANVAS_EVENTS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
CANONICAL_HEADER = ["TIME", "TYPE", "TENANT", "VENDOR", "LEARNER", "ASSESSMENT", "ID"]
DEADLETTER_HEADER = ["TIME", "REASON", "TENANT", "VENDOR", "WHERE", "MESSAGE"]


@dataclass(frozen=True)
class Posted:
    """What the module's gateway was sent, and what Kafka holds for it (in publishing order)."""

    gateway: Gateway
    env: dict[str, str]
    caliper_ids: list[str]
    canvas_ids: list[str]


@pytest.fixture(scope="module")
def tools_gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from running_gateway(broker, tmp_path_factory.mktemp("tools"))


def command_env(broker: str, gateway: Gateway) -> dict[str, str]:
    """The environment the `gateway` fixture runs with: dev configuration, the gateway's topics."""
    return {
        **os.environ,
        "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"),
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": gateway.canonical_topic,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": gateway.deadletter_topic,
    }


@pytest.fixture(scope="module")
async def posted(broker: str, tools_gateway: Gateway, kafka: TopicReader) -> Posted:
    """Three Caliper attempts (learners 1, 2, 3), then a Canvas batch of two events, then a
    Caliper envelope with one invalid event and a body that is not JSON (two dead letters)."""
    async with httpx.AsyncClient(base_url=tools_gateway.url, timeout=30) as http:
        events = [assessment_started(learner=f"tools-{n}") for n in (1, 2, 3)]
        for event in events:
            answer = await http.post("/v1/caliper", json=envelope(event), headers=AUTH)
            assert answer.status_code == 200
        batch = {
            "quiz_submission_events": [
                {"client_timestamp": "2026-03-02T09:00:00Z", "event_type": "session_started"},
                {"client_timestamp": "2026-03-02T09:00:05Z", "event_type": "page_blurred"},
            ]
        }
        assert (await http.post(CANVAS_EVENTS, json=batch, headers=AUTH)).status_code == 204
        bad = assessment_started(learner="tools-bad")
        del bad["actor"]
        assert (await http.post("/v1/caliper", json=envelope(bad), headers=AUTH)).status_code == 200
        broken = await http.post(
            "/v1/caliper",
            content=b'{"sensor": ',
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert broken.status_code == 400
    records = await kafka.read(tools_gateway.canonical_topic, lambda rs: len(rs) >= 5)
    letters = await kafka.read(tools_gateway.deadletter_topic, lambda rs: len(rs) >= 2)
    assert len(records) == 5
    assert len(letters) == 2
    by_vendor: dict[str, list[str]] = {"caliper": [], "canvas": []}
    for record in sorted(records, key=lambda r: r.json()["receivedat"]):
        by_vendor[record.json()["vendor"]].append(record.json()["id"])
    return Posted(
        tools_gateway,
        command_env(broker, tools_gateway),
        by_vendor["caliper"],
        by_vendor["canvas"],
    )


def run(posted: Posted, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GATEWAY, *args],
        env=posted.env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def printed(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


# --- gateway tail ------------------------------------------------------------------------------


def test_tail_prints_the_records_posted_one_json_object_per_line(posted: Posted) -> None:
    records = printed(run(posted, "tail"))
    assert sorted(r["id"] for r in records) == sorted(posted.caliper_ids + posted.canvas_ids)
    assert all(r["specversion"] == "1.0" for r in records)
    assert [r["id"] for r in records][-2:] == posted.canvas_ids  # oldest first, posted last


def test_tail_lines_are_the_last_records(posted: Posted) -> None:
    records = printed(run(posted, "tail", "--lines", "2"))
    assert [r["id"] for r in records] == posted.canvas_ids


def test_tail_filters_by_vendor_and_type(posted: Posted) -> None:
    canvas = printed(run(posted, "tail", "--vendor", "canvas"))
    assert [r["id"] for r in canvas] == posted.canvas_ids
    attempts = printed(run(posted, "tail", "--type", "edu.assessment.attempt.*"))
    assert sorted(r["id"] for r in attempts) == sorted(posted.caliper_ids)
    both = printed(run(posted, "tail", "--vendor", "caliper", "canvas", "--type", "*.focus_lost"))
    assert [r["type"] for r in both] == ["edu.assessment.session.focus_lost"]
    assert printed(run(posted, "tail", "--vendor", "pearson")) == []


def test_tail_lines_count_matching_records_not_the_topics_last(posted: Posted) -> None:
    # The topic's last two records are Canvas's: the two Caliper ones are further back.
    records = printed(run(posted, "tail", "--vendor", "caliper", "--lines", "2"))
    assert len(records) == 2
    assert set(r["id"] for r in records) <= set(posted.caliper_ids)
    everything = printed(run(posted, "tail", "--vendor", "caliper", "--from-beginning"))
    assert sorted(r["id"] for r in everything) == sorted(posted.caliper_ids)


def test_tail_as_a_table(posted: Posted) -> None:
    result = run(posted, "tail", "--format", "table")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == CANONICAL_HEADER
    assert len(rows) == 5
    for row, record_id in zip(rows[-2:], posted.canvas_ids, strict=True):
        cells = row.split()
        assert cells[1:4] == [
            "edu.assessment.session.started"
            if row is rows[-2]
            else "edu.assessment.session.focus_lost",
            "demo",
            "canvas",
        ]
        assert cells[-1] == record_id
    assert any("tools-1" in row and "/assess/1" in row for row in rows)


def test_tail_shows_dead_letters_without_the_vendors_event(posted: Posted) -> None:
    table = run(posted, "tail", "--topic", "deadletter", "--format", "table")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == DEADLETTER_HEADER
    assert len(rows) == 2
    invalid = next(row for row in rows if "schema_violation" in row)
    assert "caliper" in invalid
    assert "/data/0" in invalid
    assert "actor" in invalid  # the message says what is wrong
    body = next(row for row in rows if "malformed_payload" in row)
    assert "(whole body)" in body

    letters = printed(run(posted, "tail", "--topic", "deadletter"))
    assert {letter["reason"] for letter in letters} == {"schema_violation", "malformed_payload"}
    assert all("original" not in letter and "original_body" not in letter for letter in letters)
    assert "tools-bad" not in str(letters)
    whole = printed(run(posted, "tail", "--topic", "deadletter", "--with-original"))
    assert "tools-bad" in str(whole)
    reasons = printed(run(posted, "tail", "--topic", "deadletter", "--type", "malformed_payload"))
    assert [letter["reason"] for letter in reasons] == ["malformed_payload"]


def test_tail_of_a_topic_that_does_not_exist_says_so(posted: Posted) -> None:
    result = run(posted, "tail", "--topic", f"no-such-topic-{uuid.uuid4().hex[:8]}")
    assert result.returncode == 1
    assert "no topic no-such-topic-" in result.stderr


def test_tail_without_a_reachable_kafka_says_so(posted: Posted) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    result = run(
        Posted(posted.gateway, {**posted.env, "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": nowhere}, [], []),
        "tail",
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"gateway: Kafka at {nowhere}: ")
    assert "Traceback" not in result.stderr


def read_line(process: subprocess.Popen[bytes], within: float) -> str | None:
    """The next line the process prints on stdout, or None if it prints none within `within`."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    readable, _, _ = select.select([fd], [], [], within)
    return process.stdout.readline().decode() if readable else None


def test_tail_follow_prints_new_records_until_interrupted(posted: Posted) -> None:
    process = subprocess.Popen(
        [*GATEWAY, "tail", "--follow", "--lines", "0", "--vendor", "caliper"],
        env=posted.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=posted.gateway.url, timeout=30) as http:
            # Until tail has found the end offsets, a new record counts as an old one: post
            # until the first shows up, then every further one must show up as it comes.
            sent: list[str] = []
            line = None
            for _ in range(20):
                event = assessment_started(learner="tools-follow")
                sent.append(event["id"])
                http.post("/v1/caliper", json=envelope(event), headers=AUTH)
                line = read_line(process, 3)
                if line:
                    break
            assert line, "tail --follow printed nothing"
            assert orjson.loads(line)["data"]["vendor"]["event_id"] in sent
            other = {"quiz_submission_events": [{"event_type": "page_focused"}]}
            http.post(CANVAS_EVENTS, json=other, headers=AUTH)  # filtered out
            latest = assessment_started(learner="tools-follow")
            http.post("/v1/caliper", json=envelope(latest), headers=AUTH)
            followed = None
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                line = read_line(process, 1)
                if line and orjson.loads(line)["data"]["vendor"]["event_id"] == latest["id"]:
                    followed = orjson.loads(line)
                    break
                assert not line or orjson.loads(line)["vendor"] == "caliper"
            assert followed is not None, "the record posted while following never showed up"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) in (0, 130)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


# --- gateway schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "file"),
    [([], "event.schema.json"), (["--deadletter"], "deadletter.schema.json")],
)
def test_schema_prints_the_shipped_schema(
    posted: Posted, flags: list[str], file: str, tmp_path: Path
) -> None:
    shipped = (SCHEMA_DIR / "canonical" / file).read_bytes()
    result = run(posted, "schema", *flags)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == orjson.loads(shipped)
    assert result.stdout.encode() == shipped
    target = tmp_path / "copy.json"
    written = run(posted, "schema", *flags, "--write", str(target))
    assert written.returncode == 0, written.stderr
    assert written.stdout == ""
    assert target.read_bytes() == shipped


# --- serve --log-format ------------------------------------------------------------------------


def test_serve_log_format_console_logs_lines_for_humans(posted: Posted, tmp_path: Path) -> None:
    port, admin_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    # The flag wins over the configuration (and over the variable it sets).
    env = {
        **posted.env,
        "GATEWAY_LOGGING_FORMAT": "json",
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path),
        "GATEWAY_SERVER_ADMIN_PORT": str(admin_port),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*GATEWAY, "serve", "--port", str(port), "--log-format", "console"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        answer = httpx.post(
            f"{url}/v1/caliper", json=envelope(assessment_started()), headers=AUTH, timeout=30
        )
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    lines = log_path.read_text().splitlines()
    started = next(line for line in lines if re.search(r"\bstarted\b", line))
    request = next(line for line in lines if re.search(r"\brequest\b", line))
    for line in (started, request):
        assert not line.startswith("{"), line
    assert "status=200" in request
    assert "vendor=caliper" in request
    assert TOKEN not in log_path.read_text()


def test_dev_log_format_console_logs_lines_for_humans(tmp_path: Path) -> None:
    port, kafka_port = free_port(), free_port()
    log_path = tmp_path / "dev.log"
    env = {
        **os.environ,
        "GATEWAY_SERVER_STATE_DIR": str(tmp_path),
        "GATEWAY_SERVER_ADMIN_PORT": str(free_port()),  # not 8081: another gateway may have it
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *GATEWAY,
                "dev",
                "--log-format",
                "console",
                "--port",
                str(port),
                "--kafka-port",
                str(kafka_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
    try:
        read_until(process, "Ctrl-C stops both")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/caliper",
            json=envelope(assessment_started()),
            headers=AUTH,
            timeout=30,
        )
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
    request = next(line for line in log_path.read_text().splitlines() if "request" in line)
    assert not request.startswith("{"), request
    assert "status=200" in request
