"""The quiz log is a read model of the canonical topic: it sees what every gateway instance
published, and it survives a restart (SQLite under the state dir, offsets stored with the rows).
Each test starts its own gateways on the session's broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.canvas import QuizSubmission, post_events, quiz_log, stamped
from tests.support.gateway import TOKEN, Gateway, start_gateway, stop_gateway
from tests.support.http import free_port

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def resumed_from(gateway: Gateway) -> dict[str, int]:
    """The offsets the quiz log's consumer resumed from (it logs them once it has started)."""
    for _ in range(150):
        started = [line for line in gateway.log_lines() if line["event"] == "quiz_log_started"]
        if started:
            (line,) = started
            offsets: dict[str, int] = line["resumed_from"]
            return offsets
        await asyncio.sleep(0.1)
    raise AssertionError(f"the quiz log did not start: {gateway.log_path.read_text()}")


async def test_every_instance_serves_the_whole_log_and_a_restart_resumes_it(
    broker: str, tmp_path: Path
) -> None:
    sub = QuizSubmission.fresh()
    first = [stamped("session_started", 0, {"user_agent": "UA"}), stamped("page_blurred", 1)]
    second = [stamped("page_focused", 2), stamped("question_viewed", 3, ["7"])]
    one = start_gateway(broker, tmp_path)
    shared = {
        "GATEWAY_KAFKA_CANONICAL_TOPIC": one.canonical_topic,
        "GATEWAY_KAFKA_DEADLETTER_TOPIC": one.deadletter_topic,
    }
    other = start_gateway(broker, tmp_path, shared)  # same topics, its own state dir
    try:
        assert await resumed_from(one) == {}  # a new state dir: from the beginning
        assert await post_events(one, sub, *first) == 204
        # The other instance's read model got them through Kafka.
        from_other = await quiz_log(other, sub)
        assert [t for _, t in from_other] == ["session_started", "page_blurred"]
        assert await quiz_log(one, sub) == from_other  # same ids: the canonical ids
        stop_gateway(one)

        # Posted while the first instance is down...
        assert await post_events(other, sub, *second) == 204
        expected = await quiz_log(other, sub)
        assert len(expected) == 4

        # ...the first one, restarted on its state dir, resumes where it stopped.
        one = start_gateway(broker, tmp_path, suffix=one.suffix)
        assert sum((await resumed_from(one)).values()) == len(first)  # every record before the stop
        assert await quiz_log(one, sub) == expected  # and no record twice
    finally:
        stop_gateway(one)
        stop_gateway(other)
    # Every GET found the read model caught up with Kafka's end offsets: none waited it out.
    for gateway in (one, other):
        assert not [line for line in gateway.log_lines() if line["event"] == "quiz_log_lagging"]

    # The log is served from the state dir, not re-read from Kafka: on a topic that is empty,
    # the same state dir still answers the whole log.
    state = {"GATEWAY_SERVER_STATE_DIR": str(tmp_path / f"state-{one.suffix}")}
    fresh_topic = start_gateway(broker, tmp_path, state)
    try:
        assert await resumed_from(fresh_topic) == {}  # nothing consumed from this topic
        assert await quiz_log(fresh_topic, sub) == expected
    finally:
        stop_gateway(fresh_topic)


async def test_worker_processes_share_one_log(broker: str, tmp_path: Path) -> None:
    """`gateway serve --workers 3`: each worker consumes the topic into the same SQLite file; a
    GET answered by any worker holds every event a POST to any worker was answered 204 for."""
    sub = QuizSubmission.fresh()
    gateway = start_gateway(broker, tmp_path, {"GATEWAY_SERVER_WORKERS": "3"})
    try:
        for n in range(12):  # requests spread over the workers by the kernel
            assert await post_events(gateway, sub, stamped(f"event_{n}", n)) == 204
            logged = [t for _, t in await quiz_log(gateway, sub)]
            assert logged == [f"event_{k}" for k in range(n + 1)]
    finally:
        stop_gateway(gateway)


async def test_a_broker_that_comes_back_empty_is_read_from_its_beginning(tmp_path: Path) -> None:
    """The dev broker keeps nothing across restarts: offsets stored against the old one must
    not make the quiz log skip what the new one receives."""
    port = free_port()
    broker = start_broker(port, quiet=True)
    sub = QuizSubmission.fresh()
    gateway = start_gateway(f"127.0.0.1:{port}", tmp_path)
    try:
        events = [stamped("session_started", n, {"user_agent": "UA"}) for n in range(3)]
        assert await post_events(gateway, sub, *events) == 204
        assert len(await quiz_log(gateway, sub)) == 3
        stop_gateway(gateway)
        stop_broker(broker)

        broker = start_broker(port, quiet=True)  # empty: every offset is back to 0
        gateway = start_gateway(f"127.0.0.1:{port}", tmp_path, suffix=gateway.suffix)
        assert await post_events(gateway, sub, stamped("page_blurred", 9)) == 204
        logged = [t for _, t in await quiz_log(gateway, sub)]
        assert logged == ["session_started"] * 3 + ["page_blurred"]
        assert any(line["event"] == "quiz_log_offsets_reset" for line in gateway.log_lines())
    finally:
        stop_gateway(gateway)
        stop_broker(broker)
