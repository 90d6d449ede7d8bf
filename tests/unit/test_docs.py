"""The README tells the truth: every setting the code reads is documented with its variable."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from gateway.settings import sections

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()

SETTINGS = [
    (name, field.name) for name, section in sections().items() for field in fields(section.kind)
]


@pytest.mark.parametrize(("section", "name"), SETTINGS, ids=[f"{s}.{n}" for s, n in SETTINGS])
def test_every_setting_is_documented_with_its_variable(section: str, name: str) -> None:
    variable = f"GATEWAY_{section}_{name}".upper()
    vendor_page = ROOT / "docs" / "vendors" / f"{section}.md"
    documented = README + (vendor_page.read_text() if vendor_page.exists() else "")
    assert f"`{section}.{name}`" in documented, f"{section}.{name} is not in the README"
    assert variable in documented, f"{variable} is not in the README"
