"""The librdkafka producer's asyncio face against the embedded broker: one future per batch of
records completes when all are in Kafka, and fails (never hangs) when they cannot be."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.kafka.broker import start_broker, stop_broker
from gateway.kafka.producer import AsyncProducer, ProducerError, RecordsRefused
from gateway.kafka.records import OutRecord
from gateway.settings import KafkaSettings
from tests.support.http import free_port
from tests.support.kafka import TopicReader

MAX_RECORD_BYTES = 64 * 1024


def settings(bootstrap: str, timeout: float = 10.0) -> KafkaSettings:
    return dataclasses.replace(
        KafkaSettings(),
        bootstrap_servers=bootstrap,
        enable_idempotence=False,  # the embedded broker has no InitProducerId
        publish_timeout_seconds=timeout,
    )


@pytest.fixture
async def producer(broker: str) -> AsyncIterator[AsyncProducer]:
    started = AsyncProducer(settings(broker), MAX_RECORD_BYTES)
    await started.start(10)
    yield started
    await started.flush(5)
    await started.stop()


async def test_one_future_completes_once_every_record_of_the_batch_is_in_kafka(
    producer: AsyncProducer, kafka: TopicReader
) -> None:
    topic = f"test.producer.{uuid.uuid4().hex[:8]}"
    sent = [
        OutRecord(topic, f"key-{n}".encode(), f"value-{n}".encode(), (("n", str(n).encode()),))
        for n in range(3)
    ]
    await asyncio.wait_for(producer.send(sent), 15)
    records = await kafka.read(topic, lambda rs: len(rs) >= 3)
    assert sorted((r.key, r.value, r.headers) for r in records) == [
        (f"key-{n}".encode(), f"value-{n}".encode(), {"n": str(n).encode()}) for n in range(3)
    ]


async def test_a_record_too_large_is_refused_alone_and_the_others_are_delivered(
    producer: AsyncProducer, kafka: TopicReader
) -> None:
    topic = f"test.producer.huge.{uuid.uuid4().hex[:8]}"
    huge = OutRecord(topic, b"k", b"x" * (MAX_RECORD_BYTES + 1))
    sent = [OutRecord(topic, b"k", b"small"), huge, OutRecord(topic, b"k", b"after")]
    with pytest.raises(RecordsRefused) as refused:
        await asyncio.wait_for(producer.send(sent), 15)
    assert list(refused.value.refused) == [1]
    refusal = refused.value.refused[1]
    assert (refusal.reason, refusal.local) == ("record_too_large", True)
    assert "MSG_SIZE_TOO_LARGE" in refusal.detail
    records = await kafka.read(topic, lambda rs: len(rs) >= 2)
    assert [r.value for r in records] == [b"small", b"after"]


async def test_a_broker_refuses_the_batch_of_an_invalid_record_but_not_a_batch_of_its_own(
    tmp_path: Path,
) -> None:
    # Brokers refuse a whole batch for one invalid record (here by a broker-side schema): its
    # batch-mates are refused with it. Sent alone, each record answers for itself.
    topic = f"test.producer.strict.{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{topic}.json").write_text(
        '{"type": "object", "properties": {"value": {"type": "object", '
        '"properties": {"ok": {"const": true}}}}}'
    )
    port = free_port()
    process = start_broker(port, quiet=True, schemas=tmp_path)
    config = settings(f"127.0.0.1:{port}")
    batched = AsyncProducer(config, MAX_RECORD_BYTES)
    alone = AsyncProducer(config, MAX_RECORD_BYTES, alone=True)
    sent = [OutRecord(topic, b"k", f'{{"ok": {v}}}'.encode()) for v in ("true", "false", "true")]
    try:
        for started in (batched, alone):
            await started.start(10)
        with pytest.raises(RecordsRefused) as together:
            await asyncio.wait_for(batched.send(sent), 15)
        assert sorted(together.value.refused) == [0, 1, 2]
        assert {r.reason for r in together.value.refused.values()} == {"record_invalid"}
        with pytest.raises(RecordsRefused) as each:
            await asyncio.wait_for(alone.send(sent), 15)
        assert sorted(each.value.refused) == [1]
        assert not each.value.refused[1].local
    finally:
        for started in (batched, alone):
            await started.flush(0)
            await started.stop()
        stop_broker(process)


async def test_a_batch_kafka_never_acknowledges_fails_within_the_publish_timeout() -> None:
    port = free_port()
    process = start_broker(port, quiet=True)
    producer = AsyncProducer(settings(f"127.0.0.1:{port}", timeout=2.0), MAX_RECORD_BYTES)
    try:
        await producer.start(10)
        stop_broker(process)  # gone before the records are sent
        batch = [OutRecord("test.producer.lost", b"k", f"v{n}".encode()) for n in range(3)]
        started = time.monotonic()
        with pytest.raises(ProducerError, match="MSG_TIMED_OUT"):
            await asyncio.wait_for(producer.send(batch), 15)
        assert time.monotonic() - started < 10  # librdkafka's message.timeout.ms, not forever
    finally:
        stop_broker(process)
        await producer.flush(0)
        await producer.stop()
