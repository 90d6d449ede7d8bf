"""Schemathesis against the running gateway's own `/openapi.json` (served on its admin port, it
describes the public port's routes): requests generated for every documented operation
(arbitrary bodies, path parameters, headers), sent to the public port with the dev bearer token
where a vendor takes one, must never get a 5xx. Bounded (examples per operation, no deadline
per example) so the whole run stays well under a minute.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.support.gateway import TOKEN, Gateway

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
)


def test_no_generated_request_gets_a_server_error(gateway: Gateway) -> None:
    # Driven through Hypothesis directly: schemathesis's own pytest plugin (`from_fixture`,
    # `parametrize`) does not run under the pytest this project uses.
    schema = schemathesis.openapi.from_url(f"{gateway.admin_url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the gateway's OpenAPI document has invalid parts"
    assert len(operations) >= 9  # every vendor's routes

    for operation in operations:

        @SETTINGS
        @given(case=operation.as_strategy())
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            response = case.call(
                base_url=gateway.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            case.validate_response(response, checks=[not_a_server_error])

        no_server_error()
