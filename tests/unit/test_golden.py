"""Golden files for every vendor: each fixture request in, the canonical records and dead letters
out, exactly as reviewed (tests/fixtures/<vendor>/golden/).

The vendors come from the registry and their cases from tests/fixtures/<vendor>/in/ (the
convention is in tests/support/golden.py): a vendor gets golden tests by adding files. After an
intended change, regenerate with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py`
and review the diff.
"""

from __future__ import annotations

import pytest

from gateway.vendors import registry
from tests.support.golden import FIXTURES, Case, cases, check_golden, outcome

VENDORS = registry()
CASES = [case for name in VENDORS for case in cases(name)]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_request_in_canonical_records_out(case: Case) -> None:
    actual = outcome(VENDORS[case.vendor], case)
    check_golden(actual, case.golden)
    if case.request.expect is not None:
        case.request.expect(actual)


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_every_golden_file_has_its_request_and_every_vendor_has_cases(vendor: str) -> None:
    golden = FIXTURES / vendor / "golden"
    made = {case.golden for case in CASES if case.vendor == vendor}
    assert made, f"no golden cases for {vendor}: add tests/fixtures/{vendor}/in/"
    assert set(golden.rglob("*.json")) == made
