"""Fixtures of the integration tests: the embedded broker and `gateway serve`, started once per
test session on free loopback ports (a public and an admin port per gateway), a Kafka reader
that shows what was published, HTTP clients of the session's gateway, and the check that no
gateway log of the session holds a secret or an email. The helpers behind them are in
tests/support/ (gateway.py, kafka.py, http.py).

Every test of this folder is marked `integration` here (`pytest -m "not integration"` runs the
unit tests alone).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.kafka.broker import start_broker, stop_broker
from tests.support.gateway import (
    EMAIL,
    GATEWAY_LOGS,
    SECRETS_IN_TESTS,
    Gateway,
    running_gateway,
)
from tests.support.http import free_port
from tests.support.kafka import TopicReader

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder `integration`: they need the broker and real processes."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_gateway_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: grep every log every gateway of the session wrote."""
    yield
    leaks: list[tuple[str, str]] = []
    logs = sorted(tmp_path_factory.getbasetemp().rglob("gateway-*.log"))
    for log in logs:
        text = log.read_bytes()
        leaks += [(log.name, s.decode()) for s in SECRETS_IN_TESTS if s in text]
        leaks += [(log.name, m.group().decode()) for m in EMAIL.finditer(text)]
    # A run of tests that start no gateway has no log to check; one that does must find them all.
    assert set(GATEWAY_LOGS) <= set(logs), "a gateway log of this run was not found to check"
    assert not leaks, f"secrets or emails in gateway logs: {leaks[:20]}"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """The embedded broker, on a free port; yields its bootstrap address."""
    port = free_port()
    process = start_broker(port, quiet=True)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_broker(process)


@pytest.fixture(scope="session")
def kafka(broker: str) -> TopicReader:
    return TopicReader(broker)


@pytest.fixture(scope="session")
def gateway(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for the whole session, with the dev configuration."""
    yield from running_gateway(broker, tmp_path_factory.mktemp("gateway"))


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
        yield http


@pytest.fixture
async def admin(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """The session gateway's admin port: probes, metrics, the OpenAPI document."""
    async with httpx.AsyncClient(base_url=gateway.admin_url, timeout=30) as http:
        yield http
