"""`gateway replay`: dead letters published again once the cause is fixed, with filters, a dry
run, and no second copy when replayed twice. Real broker; the letters are produced as an earlier
gateway version (whose schema rejected them) would have written them.
"""

from __future__ import annotations

import asyncio
import os
import pty
import subprocess
import sys
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from gateway.canonical import content_digest, parse_time, record_id
from gateway.settings import Settings, load_settings
from gateway.tools.replay import Filters, replay
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import ROOT
from tests.support.kafka import TopicReader

V1P2 = "http://purl.imsglobal.org/ctx/caliper/v1p2"


def settings_for(broker: str, suffix: str) -> tuple[Settings, dict[str, str]]:
    env = {
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": broker,
        "GATEWAY_KAFKA_CANONICAL_TOPIC": f"replay.canonical.{suffix}",
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": f"replay.deadletter.{suffix}",
    }
    return load_settings(ROOT / "gateway.dev.toml", environ=env), env


def letter_for_event(event: dict[str, Any], received: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "reason": "schema_violation",
        "message": "rejected by an older schema",
        "errors": [{"path": "/action", "message": "was not allowed then"}],
        "tenant": "demo",
        "vendor": "caliper",
        "receivedat": received,
        "request_id": "r1",
        "where": "/data/0",
        "original": event,
        "item": {"schema": "event", "identity": event["id"], "meta": {"sensor": "s"}},
    }


def letter_for_body(body: bytes, received: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "reason": "malformed_payload",
        "message": "rejected by an older version",
        "errors": [],
        "tenant": "demo",
        "vendor": "caliper",
        "receivedat": received,
        "request_id": "r2",
        "original_body": body.decode(),
        "original_body_encoding": "utf-8",
        "original_media_type": "application/json",
    }


def canonical_id(event: dict[str, Any]) -> str:
    return record_id("demo", "caliper", event["id"], content_digest(event))


async def produce(broker: str, topic: str, letters: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker)
    await producer.start()
    try:
        for letter in letters:
            await producer.send_and_wait(topic, orjson.dumps(letter), key=b"demo|caliper")
    finally:
        await producer.stop()


async def test_replay_publishes_fixed_letters_once_and_reports_the_rest(
    broker: str, kafka: TopicReader
) -> None:
    settings, _ = settings_for(broker, uuid.uuid4().hex[:8])
    fixed_event = assessment_started()
    in_body = assessment_started()
    still_bad = assessment_started()
    del still_bad["actor"]
    old = letter_for_event(assessment_started(), "2026-01-01T00:00:00.000Z")
    letters = [
        letter_for_event(fixed_event, "2026-11-26T10:00:00.000Z"),
        letter_for_body(orjson.dumps(envelope(in_body)), "2026-11-26T10:00:01.000Z"),
        letter_for_event(still_bad, "2026-11-26T10:00:02.000Z"),
        old,
    ]
    await produce(broker, settings.kafka.deadletter_topic, letters)

    recent = Filters(vendor="caliper", since=parse_time("2026-11-01T00:00:00Z"))
    dry = await replay(settings, recent, dry_run=True)
    assert (dry.read, dry.matched, dry.published) == (4, 3, 2)
    assert dry.still_failing == {"schema_violation": 1}

    done = await replay(settings, recent, dry_run=False)
    assert (done.matched, done.published, dict(done.still_failing)) == (
        3,
        2,
        {"schema_violation": 1},
    )
    wanted = {canonical_id(fixed_event), canonical_id(in_body)}
    records = await kafka.read(
        settings.kafka.canonical_topic, lambda rs: wanted <= {r.json()["id"] for r in rs}
    )
    assert wanted <= {r.json()["id"] for r in records}
    assert canonical_id(old["original"]) not in {r.json()["id"] for r in records}  # filtered

    again = await replay(settings, recent, dry_run=False)
    assert again.published == 2  # published again with the same ids...
    records = await kafka.settle(settings.kafka.canonical_topic, quiet=1.0)
    ids = [r.json()["id"] for r in records]
    assert ids.count(canonical_id(fixed_event)) == 2  # ...so consumers see the same id twice
    dead = await kafka.settle(settings.kafka.deadletter_topic, quiet=0.5)
    assert len(dead) == 4  # nothing was dead-lettered a second time


def test_replay_command_with_filters_and_dry_run(broker: str) -> None:
    _, env = settings_for(broker, uuid.uuid4().hex[:8])
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "replay", "--reason", "unmappable", "--dry-run"],
        env={**env, "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "dry run" in result.stdout


def run_replay(env: dict[str, str], stderr: int) -> subprocess.Popen[bytes]:
    # Bytes: text mode would turn the bar's carriage returns into newlines.
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "replay", "--dry-run"],
        env={**os.environ, **env, "GATEWAY_CONFIG": str(ROOT / "gateway.dev.toml")},
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


async def test_replay_draws_its_progress_bar_only_on_a_terminal(broker: str) -> None:
    settings, env = settings_for(broker, uuid.uuid4().hex[:8])
    letters = [letter_for_event(assessment_started(), "2026-03-01T10:00:00.000Z")]
    await produce(broker, settings.kafka.deadletter_topic, letters)

    # Piped (a log file, CI): no carriage returns, the summary alone.
    piped = run_replay(env, subprocess.PIPE)
    out, err = await asyncio.to_thread(piped.communicate, timeout=60)
    assert piped.returncode == 0, err
    assert b"\r" not in err
    assert b"[" not in err, err
    assert out.startswith(b"1 dead letters read, 1 matched; dry run: would publish 1")

    # On a terminal, the bar.
    terminal, side = pty.openpty()
    try:
        shown = run_replay(env, side)
        os.close(side)
        out, _ = await asyncio.to_thread(shown.communicate, timeout=60)
        assert shown.returncode == 0
        drawn = b""
        while True:
            try:
                chunk = os.read(terminal, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(terminal)
    assert b"\r[" in drawn, drawn
    assert b"] 1/1" in drawn, drawn
    assert out.startswith(b"1 dead letters read")
