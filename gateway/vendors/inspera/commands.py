"""`gateway inspera export`: order a test's events export through Inspera's API, wait for it and
ingest it as a webhook-announced export is (gateway/vendors/inspera/client.py does the work)."""

from __future__ import annotations

import argparse
from typing import Final

from gateway.vendors.base import Command, CommandContext, Commands


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-id", required=True, help="Inspera's test id (assessmentRunId)")
    parser.add_argument("--tenant", default=None, help="default: the tenant with Inspera keys")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _export(args: argparse.Namespace, context: CommandContext) -> int:
    # Imported when run: the API client and the downloader are not needed to parse a command line.
    from gateway.vendors.inspera.client import export_command  # noqa: PLC0415

    return export_command(context, args.test_id, args.tenant, not args.no_progress)


COMMANDS: Final = Commands(
    help="Inspera's export API",
    commands=(
        Command(
            "export",
            help="order a test's events export, wait for it and ingest it",
            arguments=_export_arguments,
            run=_export,
        ),
    ),
)
