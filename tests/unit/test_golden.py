"""Golden files for every vendor: each fixture request in, the canonical records and dead letters
out, exactly as reviewed (tests/fixtures/<vendor>/golden/).

The vendors come from the registry and their cases from tests/fixtures/<vendor>/in/ (the
convention is in tests/support/golden.py): a vendor gets golden tests by adding files. After an
intended change, regenerate with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden.py`
and review the diff.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
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


def test_a_new_folder_of_fixtures_is_new_cases_by_adding_files_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What adding fixtures is (a vendor's first, or a new folder of one):
    files in in/ and golden/, no code; the driver finds the case, and a wrong golden file
    fails it."""
    monkeypatch.delenv("UPDATE_GOLDEN", raising=False)
    canvas = FIXTURES / "canvas"
    for part in ("in", "golden"):
        (tmp_path / "canvas" / part / "more").mkdir(parents=True)
        shutil.copy(
            canvas / part / "browser-json-batch.json",
            tmp_path / "canvas" / part / "more" / "sent.json",
        )
    shutil.copy(canvas / "golden.toml", tmp_path / "canvas" / "golden.toml")
    (case,) = cases("canvas", fixtures=tmp_path)
    assert case.golden == tmp_path / "canvas" / "golden" / "more" / "sent.json"
    check_golden(outcome(VENDORS["canvas"], case), case.golden)

    wrong = orjson.loads(case.golden.read_bytes())
    wrong["canonical"] = wrong["canonical"][1:]
    case.golden.write_bytes(orjson.dumps(wrong))
    with pytest.raises(AssertionError):
        check_golden(outcome(VENDORS["canvas"], case), case.golden)
