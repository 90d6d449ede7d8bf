"""Fixtures for the whole suite. Shared helpers are in tests/support/ (test modules import from
there, never from one another or from a conftest: tests/unit/test_architecture.py checks it)."""

from __future__ import annotations

import pytest

from gateway.schemas import SchemaSet
from tests.support.schemas import SCHEMAS


@pytest.fixture(scope="session")
def schemas() -> SchemaSet:
    """The suite's one compiled schema set (the same object as tests.support.schemas.SCHEMAS)."""
    return SCHEMAS
