"""Golden files: a payload in, the canonical records (and dead letters) out, compared with the
reviewed output in tests/fixtures/<vendor>/golden/. After an intended change, regenerate with
`UPDATE_GOLDEN=1 make test` and review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from gateway.schemas import SchemaSet

CANONICAL = SchemaSet().get("canonical/event.schema.json")


def check_golden(actual: dict[str, Any], golden: Path) -> None:
    """`actual` equals the golden file, and every canonical record in it conforms."""
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n")
    assert golden.is_file(), f"no golden file {golden}: run UPDATE_GOLDEN=1 and review it"
    assert actual == orjson.loads(golden.read_bytes())
    for record in actual["canonical"]:
        assert not CANONICAL.errors(record), (record["id"], CANONICAL.errors(record))
