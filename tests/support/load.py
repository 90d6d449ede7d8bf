"""A small load generator for the fault tests: concurrent senders posting unique Caliper events
and remembering what each got back, so a test can check that every acknowledged event arrived.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.support.caliper import assessment_started, envelope, expected_id
from tests.support.gateway import TOKEN
from tests.support.kafka import KafkaRecord

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


@dataclass
class LoadResult:
    """What the senders saw: the events acknowledged (2xx) and every other outcome."""

    acknowledged: list[dict[str, Any]] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def report(self, records: list[KafkaRecord]) -> dict[str, int]:
        """Requests, acknowledged, present in Kafka, lost and duplicates."""
        ids = Counter(r.json()["id"] for r in records)
        wanted = [expected_id(e) for e in self.acknowledged]
        present = sum(1 for i in wanted if ids[i])
        return {
            "requests": self.requests,
            "acknowledged": len(wanted),
            "present_in_kafka": present,
            "lost": len(wanted) - present,
            "duplicates": sum(ids[i] - 1 for i in wanted if ids[i] > 1),
        }


async def send_load(
    url: str, stop: asyncio.Event, senders: int = 8, result: LoadResult | None = None
) -> LoadResult:
    """Post one-event envelopes from `senders` concurrent clients until `stop` is set."""
    result = result or LoadResult()

    async def sender(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            event = assessment_started()
            try:
                response = await client.post(
                    "/v1/caliper", content=orjson.dumps(envelope(event)), headers=AUTH
                )
            except httpx.TransportError as error:
                result.statuses[type(error).__name__] += 1
                await asyncio.sleep(0.05)
                continue
            result.statuses[str(response.status_code)] += 1
            if 200 <= response.status_code < 300:
                result.acknowledged.append(event)
            else:
                await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    return result


async def load_for(url: str, seconds: float, senders: int = 8) -> LoadResult:
    """Load for a fixed time (for setting up a state, not for measuring)."""
    stop = asyncio.Event()
    task = asyncio.create_task(send_load(url, stop, senders))
    await asyncio.sleep(seconds)
    stop.set()
    return await task
