"""Rate limits against a real `gateway serve`: a token bucket per tenant and vendor (429 with
`Retry-After` in the vendor's own format, nothing published, other tenants and vendors untouched),
and a bucket per client IP that failed authentication too often. The bucket arithmetic itself is
checked with a hand-driven clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.errors import RateLimited
from gateway.ratelimit import RateLimiter, TokenBuckets
from gateway.settings import RateLimitSettings
from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import Gateway, running_gateway
from tests.support.kafka import TopicReader

X_TOKEN, Y_TOKEN = "tenant-x-token", "tenant-y-token"
CANVAS_EVENTS = "/api/v1/courses/101/quizzes/202/submissions/303/events"
# Refills one token in 1000 s: within a test, a used-up bucket stays empty.
SLOW = "0.001"

CONFIG = f"""
[kafka]
enable_idempotence = false
topic_partitions = 3
topic_replication_factor = 1

[[tenants]]
name = "x"

[[tenants.credentials]]
vendor = "caliper"
secret = "{X_TOKEN}"

[[tenants.credentials]]
vendor = "canvas"
secret = "{X_TOKEN}"

[[tenants]]
name = "y"

[[tenants.credentials]]
vendor = "caliper"
secret = "{Y_TOKEN}"
"""


def limited_gateway(
    broker: str, tmp_path_factory: pytest.TempPathFactory, limits: dict[str, str]
) -> Iterator[Gateway]:
    env = {"GATEWAY_RATE_LIMIT_ENABLED": "true", **limits}
    yield from running_gateway(broker, tmp_path_factory.mktemp("ratelimit"), env, config=CONFIG)


@pytest.fixture(scope="module")
def per_sender(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    limits = {"GATEWAY_RATE_LIMIT_RATE_PER_SECOND": SLOW, "GATEWAY_RATE_LIMIT_BURST": "2"}
    yield from limited_gateway(broker, tmp_path_factory, limits)


@pytest.fixture(scope="module")
def per_client(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    limits = {
        "GATEWAY_RATE_LIMIT_FAILED_AUTH_RATE_PER_SECOND": SLOW,
        "GATEWAY_RATE_LIMIT_FAILED_AUTH_BURST": "2",
    }
    yield from limited_gateway(broker, tmp_path_factory, limits)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def caliper_body(marker: str | None = None) -> bytes:
    return orjson.dumps(envelope(assessment_started(marker)))


def canvas_body() -> bytes:
    event = {"client_timestamp": "2026-03-02T09:00:00Z", "event_type": "session_started"}
    return orjson.dumps({"quiz_submission_events": [event]})


def retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert value >= 1
    return value


async def test_a_tenant_over_its_rate_gets_429_and_others_do_not(
    per_sender: Gateway, kafka: TopicReader
) -> None:
    async with httpx.AsyncClient(base_url=per_sender.url, timeout=30) as http:
        for _ in range(2):  # the burst
            response = await http.post(
                "/v1/caliper", content=caliper_body(), headers=bearer(X_TOKEN)
            )
            assert response.status_code == 200
        marker = f"urn:uuid:{uuid.uuid4()}"
        over = await http.post("/v1/caliper", content=caliper_body(marker), headers=bearer(X_TOKEN))
        assert over.status_code == 429
        retry_after(over)
        problem = over.json()  # Caliper's route answers RFC 7807 problems
        assert over.headers["content-type"] == "application/problem+json"
        assert (problem["status"], problem["type"]) == (
            429,
            "urn:assessment-gateway:error:rate_limited",
        )

        # Another tenant on the same vendor, and the same tenant on another vendor: own buckets.
        other = await http.post("/v1/caliper", content=caliper_body(), headers=bearer(Y_TOKEN))
        assert other.status_code == 200
        canvas = await http.post(CANVAS_EVENTS, content=canvas_body(), headers=bearer(X_TOKEN))
        assert canvas.status_code == 204

        # Canvas's own error format once its bucket is empty too.
        await http.post(CANVAS_EVENTS, content=canvas_body(), headers=bearer(X_TOKEN))
        limited = await http.post(CANVAS_EVENTS, content=canvas_body(), headers=bearer(X_TOKEN))
        assert limited.status_code == 429
        retry_after(limited)
        assert list(limited.json()) == ["errors"]

        metrics = (await http.get(f"{per_sender.admin_url}/metrics")).text
        refused = [
            s.labels
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
            if s.name == "gateway_requests_total" and s.labels["status"] == "429"
        ]
        assert {"tenant": "x", "vendor": "caliper", "status": "429"} in refused

    published = await kafka.settle(per_sender.canonical_topic)
    assert not [r for r in published if marker in r.value.decode()]
    assert {r.json()["tenant"] for r in published} == {"x", "y"}


async def test_a_client_that_fails_authentication_too_often_is_held_off(
    per_client: Gateway,
) -> None:
    async with httpx.AsyncClient(base_url=per_client.url, timeout=30) as http:
        for _ in range(2):
            wrong = await http.post("/v1/caliper", content=caliper_body(), headers=bearer("guess"))
            assert wrong.status_code == 401
        # Now even a valid token from this address waits, on every vendor route.
        held = await http.post("/v1/caliper", content=caliper_body(), headers=bearer(X_TOKEN))
        assert held.status_code == 429
        retry_after(held)
        canvas = await http.post(CANVAS_EVENTS, content=canvas_body(), headers=bearer(X_TOKEN))
        assert canvas.status_code == 429
        assert (await http.get(f"{per_client.admin_url}/healthz")).status_code == 200
    lines = [line for line in per_client.log_lines() if line["event"] == "auth_failed"]
    assert len(lines) == 2
    assert all(line["client"] == "127.0.0.1" for line in lines)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10, clock=clock)
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == pytest.approx(0.5)
    clock.now += 0.5
    assert buckets.take("k") == 0.0
    clock.now += 3600  # a long pause refills to the burst, not beyond
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") > 0


def test_forgotten_buckets_start_full_and_memory_is_bounded() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0
    buckets.take("b")
    buckets.take("c")  # "a" is the least recently used: forgotten
    assert buckets.take("a") == 0.0


def test_retry_after_is_whole_seconds_until_a_token_and_off_means_off() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitSettings(enabled=True, rate_per_second=0.25, burst=1), clock)
    limiter.take("t", "caliper")
    with pytest.raises(RateLimited) as raised:
        limiter.take("t", "caliper")
    assert raised.value.retry_after == 4
    off = RateLimiter(RateLimitSettings(rate_per_second=0.25, burst=1), clock)
    for _ in range(10):
        off.take("t", "caliper")
        off.failed("127.0.0.1")
    off.check_client("127.0.0.1")
