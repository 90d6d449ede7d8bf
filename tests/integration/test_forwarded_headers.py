"""`X-Forwarded-For` is whatever a client writes: the gateway trusts it only from the proxies an
operator lists (`server.forwarded_allow_ips`, empty by default), against a real `gateway serve`.

A client that rotates the header must not escape the failed-authentication limit, must not get
another address locked out, and must not put its words in the logs; behind a listed proxy, the
address the proxy forwards is the client's.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.caliper import assessment_started, envelope
from tests.support.gateway import TOKEN, Gateway, running_gateway

# Two failed authentications per address, refilled one in 1000 s: within a test, none.
LIMITS = {
    "GATEWAY_RATE_LIMIT_ENABLED": "true",
    "GATEWAY_RATE_LIMIT_FAILED_AUTH_RATE_PER_SECOND": "0.001",
    "GATEWAY_RATE_LIMIT_FAILED_AUTH_BURST": "2",
}
SPOOFED = "198.51.100."  # TEST-NET-2: addresses no test connects from


@pytest.fixture(scope="module")
def untrusting(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """The default: no proxy is trusted."""
    yield from running_gateway(broker, tmp_path_factory.mktemp("untrusting"), LIMITS)


@pytest.fixture(scope="module")
def behind_proxy(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Loopback is a listed proxy: what it forwards is the client's address."""
    env = {**LIMITS, "GATEWAY_SERVER_FORWARDED_ALLOW_IPS": "127.0.0.1"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("behind-proxy"), env)


def post(gateway: Gateway, token: str, forwarded_for: str) -> int:
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "X-Forwarded-For": forwarded_for,
    }
    body = orjson.dumps(envelope(assessment_started()))
    response = httpx.post(f"{gateway.url}/v1/caliper", content=body, headers=headers, timeout=10)
    return response.status_code


def failed_clients(gateway: Gateway) -> list[object]:
    return [line["client"] for line in gateway.log_lines() if line.get("event") == "auth_failed"]


def test_a_spoofed_forwarded_for_neither_dodges_the_limit_nor_reaches_the_logs(
    untrusting: Gateway,
) -> None:
    assert post(untrusting, "guess-1", f"{SPOOFED}1") == 401
    assert post(untrusting, "guess-2", f"{SPOOFED}2") == 401
    # A third address in the header changes nothing: the TCP peer has used up its failures.
    assert post(untrusting, TOKEN, f"{SPOOFED}3") == 429
    assert failed_clients(untrusting) == ["127.0.0.1", "127.0.0.1"]
    assert SPOOFED.encode() not in untrusting.log_path.read_bytes()


def test_behind_a_listed_proxy_the_forwarded_address_is_the_client(behind_proxy: Gateway) -> None:
    assert post(behind_proxy, "guess-1", "203.0.113.7") == 401
    assert post(behind_proxy, "guess-2", "203.0.113.7") == 401
    assert post(behind_proxy, TOKEN, "203.0.113.7") == 429  # that client is held off
    assert post(behind_proxy, TOKEN, "203.0.113.8") == 200  # another client behind the proxy
    assert failed_clients(behind_proxy) == ["203.0.113.7", "203.0.113.7"]
