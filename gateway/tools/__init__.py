"""The operational commands, beside the gateway rather than inside its request path: for
consumers and integrators `gateway tail`, `gateway schema` and `gateway validate`; for operators
`gateway replay` (`replay`) and `gateway spool` (`spool`); and where `gateway dev` tells them its
broker (`devfile`).

Each reads what the gateway publishes, runs its pure steps or works on its state directory, and
the running service imports none of them. `gateway.cli` adds their parsers (`add_commands` here
for tail, schema and validate) and dispatches; the modules are imported only when run (the Kafka
client, the schemas, SQLite).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from typing import Any

import structlog

from gateway.settings import Settings
from gateway.tools.devfile import tool_settings


def add_commands(commands: Any) -> None:
    """Add the tools' subcommands to the `gateway` parser's subparsers."""
    from gateway.vendors import registry  # noqa: PLC0415  # vendor modules only when parsing

    tail = commands.add_parser(
        "tail",
        help="print the canonical or dead-letter topic, one record per line",
        description="Print records of the canonical topic (or the dead-letter topic), oldest "
        "first: by default the last --lines matching ones, then stop (or keep going with "
        "--follow until Ctrl-C). Dead letters' originals (vendors' events as sent, with "
        "learners' personal data) are left out unless --with-original.",
    )
    tail.add_argument(
        "--topic",
        default="canonical",
        help="canonical, deadletter (the configured topics) or a topic name; default: canonical",
    )
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new records")
    tail.add_argument(
        "--vendor",
        nargs="+",
        action="extend",
        default=[],
        choices=sorted(registry()),
        help="only these vendors",
    )
    tail.add_argument("--tenant", nargs="+", action="extend", default=[], help="only these tenants")
    tail.add_argument(
        "--type",
        nargs="+",
        action="extend",
        default=[],
        help="only these types, globs allowed ('edu.assessment.attempt.*'); "
        "for dead letters: their reason",
    )
    tail.add_argument(
        "--format",
        choices=("json", "table"),
        default="json",
        help="json: one object per line (default); table: one row per record for humans",
    )
    start = tail.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true", help="start at the first record")
    start.add_argument(
        "--lines", "-n", type=int, default=10, help="start with the last N matching records (10)"
    )
    tail.add_argument(
        "--with-original",
        action="store_true",
        help="also print the vendor's event as sent (personal data)",
    )

    schema = commands.add_parser(
        "schema", help="print the canonical record's JSON Schema (or the dead letter's)"
    )
    schema.add_argument("--deadletter", action="store_true", help="the dead-letter schema")
    schema.add_argument("--write", metavar="PATH", default=None, help="write it to PATH")

    vendors = registry()
    types = "; ".join(f"{name}: {', '.join(v.media_types)}" for name, v in sorted(vendors.items()))
    validate = commands.add_parser(
        "validate",
        help="show what a payload would become (no broker, no gateway needed)",
        description="Run a vendor's payload through the gateway's decode, schema, normalize "
        "steps and print the canonical records it would publish (JSON lines, stdout) or why "
        "it would be dead-lettered or refused (stderr). Exit 0: everything would be published; "
        "1: something would be dead-lettered or refused. FILE is the request body alone: no "
        "credential or signature is checked (for a vendor whose body is a form, FILE is the "
        "url-encoded form body, e.g. a .form or .txt file, and the signature it holds is not "
        "verified).",
    )
    validate.add_argument("file", metavar="FILE", help="the request body; - reads stdin")
    validate.add_argument("--vendor", required=True, choices=sorted(vendors))
    validate.add_argument(
        "--content-type", default=None, help=f"default: the vendor's first ({types})"
    )
    validate.add_argument("--tenant", default="demo", help="stamped on the records (demo)")
    with_ids = "; ".join(
        f"{name}: {_example_path(vendor.path)}"
        for name, vendor in sorted(vendors.items())
        if "{" in vendor.path
    )
    validate.add_argument(
        "--path",
        default=None,
        help=f"the URL path it is posted to, for routes with ids ({with_ids}); default: every id 1",
    )


def _example_path(route: str) -> str:
    """A route with ids as a sender posts to it: 101, 202, 303... for its ids, in order."""
    ids = iter(range(101, 10_000, 101))
    return re.sub(r"{\w+}", lambda _: str(next(ids)), route)


def tail(args: argparse.Namespace) -> int:
    """`gateway tail`."""
    from gateway.tools.tail import Filters, Tail, tail_command, topic_name  # noqa: PLC0415

    settings = tool_settings()  # the Kafka of a `gateway dev` running here, unless configured
    return tail_command(
        settings,
        Tail(
            topic=topic_name(settings, args.topic),
            filters=Filters(args.vendor, args.tenant, args.type),
            table=args.format == "table",
            follow=args.follow,
            from_beginning=args.from_beginning,
            lines=args.lines,
            with_original=args.with_original,
        ),
    )


def schema(args: argparse.Namespace) -> int:
    """`gateway schema`."""
    from gateway.tools.schema_cmd import schema_command  # noqa: PLC0415

    return schema_command(args.deadletter, args.write)


def validate(args: argparse.Namespace) -> int:
    """`gateway validate`."""
    from gateway.tools.validate import validate_command  # noqa: PLC0415

    return validate_command(args.file, args.vendor, args.content_type, args.tenant, args.path)


def logs_to_stderr(settings: Settings) -> None:
    """Where a command's report is its stdout, the log lines of the parts it runs (the
    publisher's) go to stderr, in the configured format and level."""
    level = logging.getLevelNamesMapping()[settings.logging.level.upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.logging.format == "json":
        renderer: structlog.typing.Processor = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
