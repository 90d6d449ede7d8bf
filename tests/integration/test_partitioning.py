"""Records land on the partition Kafka's Java client would choose for their key (murmur2), so a
consumer or a producer in another language agrees with the gateway on where an attempt lives."""

from __future__ import annotations

import uuid

import httpx
from aiokafka.partitioner import DefaultPartitioner

from tests.support.caliper import AUTH, assessment_started, envelope
from tests.support.gateway import Gateway
from tests.support.kafka import KafkaRecord, TopicReader


async def test_every_record_is_on_the_murmur2_partition_of_its_key(
    client: httpx.AsyncClient, gateway: Gateway, kafka: TopicReader
) -> None:
    marker = uuid.uuid4().hex
    events = [
        assessment_started(f"urn:uuid:{marker}-{n}", learner=f"{marker}-{n}") for n in range(24)
    ]
    response = await client.post("/v1/caliper", json=envelope(*events), headers=AUTH)
    assert response.status_code == 200, response.text

    def ours(records: list[KafkaRecord]) -> list[KafkaRecord]:
        return [r for r in records if marker.encode() in r.value]

    records = ours(await kafka.read(gateway.canonical_topic, lambda rs: len(ours(rs)) >= 24))
    assert len(records) == 24
    partitioner = DefaultPartitioner()  # murmur2, as the Java client
    partitions = [0, 1, 2]  # gateway.dev.toml: topic_partitions = 3
    assert {r.partition for r in records} == set(partitions)  # 24 learners spread over all three
    for record in records:
        assert record.key is not None
        assert record.partition == partitioner(record.key, partitions, partitions)
