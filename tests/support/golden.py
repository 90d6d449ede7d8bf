"""The golden-file driver: every vendor's fixture requests in, canonical records and dead letters
out, compared with the reviewed output. `tests/unit/test_golden.py` runs it for every vendor of
the registry (`gateway.vendors.registry()`).

Layout, the same for every vendor:

    tests/fixtures/<vendor>/in/**        what the vendor sends (sub-folders allowed)
    tests/fixtures/<vendor>/golden/**    what the gateway makes of it, same relative path
    tests/fixtures/<vendor>/golden.toml  optional: `received_at` (RFC 3339, default
                                         2026-01-01T12:00:00Z) and `dead_letter_fields`
                                         (default ["where", "reason", "errors"])

How an input file becomes a request (files only: a new vendor needs no code):

- `<name>.json` holding an object with `content_type` and `body` is a request description:
  `body` is sent as is when a string, as JSON otherwise; `path`, `query` and `headers` are
  optional objects; `route`, optional, is the path of the vendor's ingest route it is posted to
  when not the vendor's own (one of its `feeds`); `deadletters`, when present, lists the JSON
  pointers (`where`) of the items that must be dead-lettered, in order.
- any other `<name>.json` is POSTed as it is, as `application/json`.
- `<name>.form` is POSTed as it is, as `application/x-www-form-urlencoded`.
- other files (SOURCE.md, NOTICE.md, licenses) are not requests.

A vendor whose fixtures need more (Caliper wraps bare events in its envelope, Pearson signs its
form fields, Inspera feeds export files to its streaming parser) defines `golden_requests(path,
relative)` in `tests/support/<vendor>.py`: it returns the requests of one input file, or None
for the convention above. An input that makes several requests has one golden file each,
`<stem>-example-<n>.json`.

The outcome is computed by the pipeline's own pure steps, `gateway.pipeline.split_request` and
`normalize_items` (decode, envelope schema, split, validate, normalize, stamp), with a fixed
tenant (`golden-tenant`), request id (`golden-request`) and receive time: `{"canonical": [...],
"deadletters": [...]}`, with `"refused": {status, code, message, errors}` beside them when the
vendor refuses the request as a whole (an xAPI batch the spec makes a 400). After an intended
change, regenerate with `UPDATE_GOLDEN=1` and review the diff before committing it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson

from gateway.canonical import NormalizeContext
from gateway.errors import GatewayError, Rejection
from gateway.pipeline import normalize_items, split_request
from gateway.vendors.base import Inbound, Item, Vendor
from tests.support.schemas import CANONICAL, SCHEMAS

FIXTURES: Final = Path(__file__).resolve().parents[1] / "fixtures"
JSON: Final = "application/json"
FORM: Final = "application/x-www-form-urlencoded"
DEFAULT_RECEIVED_AT: Final = "2026-01-01T12:00:00Z"
DEFAULT_DEAD_LETTER_FIELDS: Final = ("where", "reason", "errors")

Outcome = dict[str, Any]


@dataclass(frozen=True)
class GoldenRequest:
    """One request of an input file, and where its golden file is (relative to golden/).

    `items`: items that came in no request (an export file): they take the steps from
    validation on. `head`: fields the vendor's golden files hold before `canonical`. `expect`:
    what must hold of the outcome besides being equal to the golden file. `route`: the path of
    the vendor's ingest route it is posted to, when not the vendor's own (one of its feeds)."""

    golden: Path
    inbound: Inbound | None = None
    items: tuple[Item, ...] | None = None
    head: Callable[[Sequence[Item]], dict[str, Any]] | None = None
    expect: Callable[[Outcome], None] | None = None
    route: str | None = None


@dataclass(frozen=True)
class Case:
    """A golden case: a vendor, the input file and one request it makes."""

    vendor: str
    source: Path
    request: GoldenRequest
    golden_dir: Path
    received_at: datetime
    dead_letter_fields: tuple[str, ...] = field(default=DEFAULT_DEAD_LETTER_FIELDS)

    @property
    def golden(self) -> Path:
        return self.golden_dir / self.request.golden

    @property
    def id(self) -> str:
        return f"{self.vendor}/{self.request.golden.as_posix()}"


def default_requests(path: Path, relative: Path) -> list[GoldenRequest]:
    """The requests of one input file by the convention of this module's docstring."""
    golden = relative.with_suffix(".json")
    if path.suffix == ".form":
        return [GoldenRequest(golden, Inbound("POST", FORM, path.read_bytes()))]
    if path.suffix != ".json":
        return []
    document = orjson.loads(path.read_bytes())
    if not (isinstance(document, dict) and {"content_type", "body"} <= document.keys()):
        return [GoldenRequest(golden, Inbound("POST", JSON, path.read_bytes()))]
    body = document["body"]
    inbound = Inbound(
        "POST",
        document["content_type"],
        body.encode() if isinstance(body, str) else orjson.dumps(body),
        headers=document.get("headers", {}),
        query=document.get("query", {}),
        path_params=document.get("path", {}),
    )
    route = document.get("route")
    expect = None
    if "deadletters" in document:
        expected = document["deadletters"]

        def expect(outcome: Outcome) -> None:
            assert [d["where"] for d in outcome["deadletters"]] == expected

    return [GoldenRequest(golden, inbound, expect=expect, route=route)]


def vendor_requests(vendor: str) -> Callable[[Path, Path], list[GoldenRequest] | None] | None:
    """The vendor's own `golden_requests` (tests/support/<vendor>.py), if it has one."""
    if importlib.util.find_spec(f"tests.support.{vendor}") is None:
        return None
    found: Callable[[Path, Path], list[GoldenRequest] | None] | None = getattr(
        importlib.import_module(f"tests.support.{vendor}"), "golden_requests", None
    )
    return found


def cases(vendor: str, fixtures: Path = FIXTURES) -> list[Case]:
    """Every golden case of a vendor, from <fixtures>/<vendor>/in/ (none without it)."""
    root = fixtures / vendor
    options: dict[str, Any] = {}
    if (root / "golden.toml").is_file():
        options = tomllib.loads((root / "golden.toml").read_text(encoding="utf-8"))
    received_at = datetime.fromisoformat(options.get("received_at", DEFAULT_RECEIVED_AT))
    fields = tuple(options.get("dead_letter_fields", DEFAULT_DEAD_LETTER_FIELDS))
    own = vendor_requests(vendor)
    found: list[Case] = []
    for path in sorted((root / "in").rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root / "in")
        requests = own(path, relative) if own else None
        if requests is None:
            requests = default_requests(path, relative)
        for request in requests:
            found.append(
                Case(vendor, path, request, root / "golden", received_at.astimezone(UTC), fields)
            )
    return found


def outcome(vendor: Vendor, case: Case, *, include_original: bool = False) -> Outcome:
    """What the pipeline's pure steps make of the case's request, on the route it names."""
    request = case.request
    if request.route is not None:
        (vendor,) = (route for route in vendor.ingest_routes if route.path == request.route)
    ctx = NormalizeContext("golden-tenant", vendor.name, case.received_at, "golden-request")
    if request.items is not None:
        items: Sequence[Item] = request.items
    else:
        assert request.inbound is not None, "a golden request is an Inbound or items"
        try:
            items = split_request(vendor, request.inbound, SCHEMAS)
        except GatewayError as error:  # the whole request is refused: what the sender is told
            return {"canonical": [], "deadletters": [], "refused": _refused(error)}
    normalized = normalize_items(vendor, items, ctx, SCHEMAS, include_original=include_original)
    result: Outcome = dict(request.head(items)) if request.head else {}
    result["canonical"] = normalized.canonical
    result["deadletters"] = [
        {name: _dead_letter_field(name, item, rejection) for name in case.dead_letter_fields}
        for item, rejection in normalized.rejected
    ]
    return result


def _refused(error: GatewayError) -> dict[str, Any]:
    """A refused request as the golden files hold it: the answer's status, code, words and the
    pointers of what is wrong."""
    errors = [{"path": e.path, "message": e.message} for e in error.errors]
    return {"status": error.status, "code": error.code, "message": error.message, "errors": errors}


def _dead_letter_field(name: str, item: Item, rejection: Rejection) -> Any:
    """One field of a dead letter as the golden files hold it (`dead_letter_fields`)."""
    if name == "where":
        return item.where
    if name == "reason":
        return rejection.code
    if name == "message":
        return rejection.message
    if name == "errors":
        return [asdict(e) for e in rejection.errors]
    if name == "original":
        return item.payload
    raise ValueError(f"no dead-letter field {name!r} (golden.toml: dead_letter_fields)")


def check_golden(actual: Outcome, golden: Path) -> None:
    """`actual` equals the golden file, and every canonical record in it conforms."""
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(orjson.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n")
    assert golden.is_file(), f"no golden file {golden}: run UPDATE_GOLDEN=1 and review it"
    assert actual == orjson.loads(golden.read_bytes())
    for record in actual["canonical"]:
        assert not CANONICAL.errors(record), (record["id"], CANONICAL.errors(record))
