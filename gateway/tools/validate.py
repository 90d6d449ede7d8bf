"""`gateway validate`: what a vendor's payload would become, without a broker or a gateway.

Runs the pure steps of the pipeline (decode, envelope schema, split, validate, normalize, stamp)
on a file, exactly as a request would go through them, and prints the canonical records on
stdout (JSON lines) and on stderr why anything would be dead-lettered or refused. No credential
or signature is checked: the file is the body alone.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TextIO

import orjson
from starlette.routing import compile_path

from gateway.canonical import NormalizeContext
from gateway.errors import (
    ConfigError,
    FieldError,
    MalformedPayload,
    Rejection,
    UnsafePayload,
    UnsupportedMediaType,
    UnsupportedVersion,
)
from gateway.limits import check_form
from gateway.pipeline import normalize_items, split_request
from gateway.schemas import SchemaSet
from gateway.vendors import registry
from gateway.vendors.base import Inbound, Vendor

# Path ids of a route (a course, a quiz, a submission...) when `--path` does not give them.
DEFAULT_PATH_ID: Final = "1"
_BODY_ERRORS: Final = (MalformedPayload, UnsupportedMediaType, UnsupportedVersion)


def validate_command(
    file: str,
    vendor_name: str,
    content_type: str | None,
    tenant: str,
    path: str | None,
) -> int:
    """0 when every event of the file would be published; 1 when anything would be
    dead-lettered or the request refused."""
    vendor = registry()[vendor_name]
    body = sys.stdin.buffer.read() if file == "-" else _read(file)
    if not body.strip():
        # Said first: what follows (a parse error, a missing field) would not say it.
        print(f"{file}: empty body", file=sys.stderr)
    media_type = (content_type or vendor.media_types[0]).split(";", 1)[0].strip().lower()
    inbound = Inbound("POST", media_type, body, path_params=path_params(vendor, path))
    ctx = NormalizeContext(tenant, vendor.name, datetime.now(UTC), uuid.uuid4().hex)
    schemas = SchemaSet()
    out, report = sys.stdout, sys.stderr
    try:
        check_form(inbound.media_type, inbound.body)  # as the app does, before parsing
        items = split_request(vendor, inbound, schemas)
    except (*_BODY_ERRORS, UnsafePayload) as error:
        # Over a safety limit, a body is refused even by vendors that are told success otherwise.
        if vendor.accept_malformed and not isinstance(error, UnsafePayload):
            # Such a vendor redelivers anything but success: the gateway keeps the body instead.
            rejection = Rejection(error.code, error.message, error.errors)
            _report_rejection(report, "the body", rejection)
            print(
                f"would answer {vendor.success.status} and dead-letter the whole body",
                file=report,
            )
            return 1
        reply = vendor.render_error(error)
        print(f"would be refused: HTTP {reply.status} {error.code}: {error.message}", file=report)
        _report_errors(report, error.errors)
        if reply.body:
            print(f"  answer body: {reply.body.decode('utf-8', 'replace')}", file=report)
        return 1
    normalized = normalize_items(vendor, items, ctx, schemas, include_original=False)
    seen: set[str] = set()
    duplicates = 0
    for record in normalized.canonical:
        if record["id"] in seen:
            duplicates += 1  # the gateway publishes an event once per request
            continue
        seen.add(record["id"])
        out.write(orjson.dumps(record).decode() + "\n")
    out.flush()
    for item, rejection in normalized.rejected:
        _report_rejection(report, item.where or "the event", rejection)
    summary = (
        f"would answer {vendor.success.status}: {_count(len(seen), 'canonical record')}, "
        f"{_count(len(normalized.rejected), 'dead letter')}"
    )
    if duplicates:
        summary += f", {_count(duplicates, 'repeated event')} (same id) published once"
    print(summary + f" (tenant {tenant!r}; ids depend on it)", file=report)
    return 1 if normalized.rejected else 0


def path_params(vendor: Vendor, path: str | None) -> Mapping[str, str]:
    """The route's parameters as `path` fills them (default: each one `1`)."""
    route, _, params = compile_path(vendor.path)
    if path is None:
        return dict.fromkeys(params, DEFAULT_PATH_ID)
    matched = route.match(path.split("?", 1)[0])
    if matched is None:
        raise ConfigError(f"--path {path!r} is not a {vendor.name} route ({vendor.path})")
    return matched.groupdict()


def _read(file: str) -> bytes:
    try:
        return Path(file).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read {file}: {error.strerror}") from None


def _report_rejection(report: TextIO, where: str, rejection: Rejection) -> None:
    print(f"dead letter ({rejection.code}) at {where}: {rejection.message}", file=report)
    _report_errors(report, rejection.errors)


def _report_errors(report: TextIO, errors: tuple[FieldError, ...]) -> None:
    """One line per field, with everything that is wrong with it."""
    by_field: dict[str, list[str]] = {}
    for error in errors:
        by_field.setdefault(error.path or "/", []).append(error.message)
    for where, messages in by_field.items():
        print(f"  {where}: {'; '.join(messages)}", file=report)


def _count(number: int, thing: str) -> str:
    return f"{number} {thing}" if number == 1 else f"{number} {thing}s"
