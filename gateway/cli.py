"""The `gateway` command: `broker`, `serve` and `dev` (the fixed interface of docs/DESIGN.md);
`replay`, `spool` and `inspera export` for operators; `tail`, `schema` and `validate` for
consumers and the vendors integrating with the gateway (gateway/tools/)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import uvicorn

from gateway import __version__, tools
from gateway.broker import broker_command, start_broker, stop_broker
from gateway.canonical import parse_time
from gateway.errors import ConfigError, NormalizeError
from gateway.http_server import uvicorn_options
from gateway.settings import CONFIG_ENV, Settings, load_settings

DEV_CONFIG = "gateway.dev.toml"

EXAMPLE_ENVELOPE = (
    '{"sensor":"https://example.edu/sensors/1","sendTime":"2026-11-26T10:00:01.000Z",'
    '"dataVersion":"http://purl.imsglobal.org/ctx/caliper/v1p2","data":[{'
    '"@context":"http://purl.imsglobal.org/ctx/caliper/v1p2","id":"urn:uuid:3a9b0c5e-2d7f-4c1a-9e8b-1f2d3c4b5a69",'
    '"type":"AssessmentEvent","profile":"AssessmentProfile","actor":"https://example.edu/users/554433",'
    '"action":"Started","object":{"id":"https://example.edu/courses/7/assess/1","type":"Assessment"},'
    '"generated":{"id":"https://example.edu/courses/7/assess/1/users/554433/attempts/1","type":"Attempt",'
    '"assignee":"https://example.edu/users/554433","assignable":"https://example.edu/courses/7/assess/1","count":1},'
    '"eventTime":"2026-11-26T10:00:00.000Z"}]}'
)


def example_curl(port: int) -> str:
    """A curl that posts a Caliper envelope to a gateway started with the dev configuration."""
    return (
        f"curl -i http://127.0.0.1:{port}/v1/caliper \\\n"
        "  -H 'Authorization: Bearer dev-token' -H 'Content-Type: application/json' \\\n"
        f"  --data '{EXAMPLE_ENVELOPE}'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    broker = commands.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument("--port", type=int, default=9092)

    serve = commands.add_parser("serve", help=f"run the gateway (config from ${CONFIG_ENV})")
    serve.add_argument("--host", default=None, help="default: server.host of the config")
    serve.add_argument("--port", type=int, default=None, help="default: server.port of the config")
    serve.add_argument("--workers", type=int, default=None, help="default: server.workers")
    _log_format_option(serve)

    dev = commands.add_parser("dev", help=f"run broker + gateway with {DEV_CONFIG}")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--kafka-port", type=int, default=9092)
    _log_format_option(dev)

    inspera = commands.add_parser("inspera", help="Inspera's export API")
    inspera_commands = inspera.add_subparsers(dest="inspera_command", required=True)
    export = inspera_commands.add_parser(
        "export", help="order a test's events export, wait for it and ingest it"
    )
    export.add_argument("--test-id", required=True, help="Inspera's test id (assessmentRunId)")
    export.add_argument("--tenant", default=None, help="default: the tenant with Inspera keys")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")

    replay = commands.add_parser("replay", help="publish dead letters again after a fix")
    replay.add_argument("--vendor", default=None, help="only this vendor's letters")
    replay.add_argument("--reason", default=None, help="only letters with this reason code")
    replay.add_argument("--since", default=None, help="received at or after (ISO 8601)")
    replay.add_argument("--until", default=None, help="received before (ISO 8601)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be published")

    spool = commands.add_parser("spool", help="show the local spool (and drain it)")
    spool.add_argument("--drain", action="store_true", help="forward unheld spool files to Kafka")

    tools.add_commands(commands)

    args = parser.parse_args(argv)
    if getattr(args, "log_format", None):
        # Before the settings are loaded, and inherited by uvicorn's worker processes.
        os.environ["GATEWAY_LOGGING_FORMAT"] = args.log_format
    commands_run: dict[str, Callable[[argparse.Namespace], int]] = {
        "broker": lambda a: _broker(a.port),
        "serve": lambda a: _serve(a.host, a.port, a.workers),
        "dev": lambda a: _dev(a.port, a.kafka_port),
        "replay": lambda a: _replay(a.vendor, a.reason, a.since, a.until, a.dry_run),
        "spool": lambda a: _spool(a.drain),
        "inspera": _inspera,
        "tail": tools.tail,
        "schema": tools.schema,
        "validate": tools.validate,
    }
    try:
        return commands_run[args.command](args)
    except ConfigError as error:
        print(f"gateway: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _log_format_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help="json (one object per line) or console (lines for humans); default: logging.format",
    )


def _inspera(args: argparse.Namespace) -> int:
    from gateway.inspera_client import export_command  # noqa: PLC0415  # its own deps

    return export_command(args.test_id, args.tenant, not args.no_progress)


def _broker(port: int) -> int:
    print(f"embedded Kafka-compatible broker on 127.0.0.1:{port} (in memory; Ctrl-C stops it)")
    sys.stdout.flush()
    return subprocess.call(broker_command(port))  # noqa: S603  # our own binary


def _serve(host: str | None, port: int | None, workers: int | None) -> int:
    server = load_settings().server  # fail here, loudly, before uvicorn forks workers
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        host=host or server.host,
        port=port or server.port,
        workers=workers or server.workers,
        **uvicorn_options(server),  # the HTTP limits, proxies trusted, uvicorn's own logging
    )
    return 0


def _replay(
    vendor: str | None, reason: str | None, since: str | None, until: str | None, dry_run: bool
) -> int:
    from gateway.replay import Filters, progress_bar, replay  # noqa: PLC0415  # Kafka client

    settings = load_settings()
    try:
        filters = Filters(
            vendor=vendor,
            reason=reason,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except NormalizeError as error:
        raise ConfigError(f"--since/--until: {error.message}") from None
    tally = asyncio.run(replay(settings, filters, dry_run, progress_bar()))
    mode = "dry run: would publish" if dry_run else "published"
    print(
        f"{tally.read} dead letters read, {tally.matched} matched; {mode} {tally.published} "
        f"canonical records ({tally.duplicates} duplicates skipped)"
    )
    for code, count in sorted(tally.still_failing.items()):
        print(f"still failing: {count} x {code}")
    return 0


def _spool(drain: bool) -> int:
    from gateway.spool import inspect_quarantine, inspect_spool  # noqa: PLC0415  # SQLite

    settings = load_settings()
    directory = Path(settings.server.state_dir) / "spool"
    if drain:
        forwarded = asyncio.run(_drain(settings))
        print(f"forwarded {forwarded} records to Kafka")
    slots = inspect_spool(directory) if directory.is_dir() else []
    print(f"spool {directory}: {sum(s.records for s in slots)} records")
    for slot in slots:
        age = f", oldest {time.time() - slot.oldest:.0f}s old" if slot.oldest else ""
        owner = "held by a running gateway" if slot.held else "not held"
        print(f"  {slot.path.name}: {slot.records} records, {slot.bytes} bytes{age} ({owner})")
    quarantine = inspect_quarantine(directory)
    if quarantine is not None and quarantine.records:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(quarantine.reasons.items()))
        print(
            f"quarantine {quarantine.path}: {quarantine.records} records Kafka refused for good "
            f"and no dead letter could replace ({reasons}; {quarantine.bytes} bytes); never "
            "retried: read them with sqlite3"
        )
    return 0


async def _drain(settings: Settings) -> int:
    """Adopt every spool file no gateway holds and forward it to Kafka."""
    from gateway.publisher import Publisher  # noqa: PLC0415  # Kafka client only when asked

    publisher = Publisher(settings.kafka, settings.server, settings.spool)
    await publisher.start()
    try:
        await publisher.drained()
    finally:
        await publisher.stop()
    return publisher.forwarded_total


def _dev_config() -> Path:
    local = Path.cwd() / DEV_CONFIG
    return local if local.is_file() else Path(__file__).resolve().parent.parent / DEV_CONFIG


def _dev(port: int, kafka_port: int) -> int:
    os.environ[CONFIG_ENV] = str(_dev_config())
    os.environ["GATEWAY_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{kafka_port}"
    os.environ["GATEWAY_SERVER_PORT"] = str(port)
    server = load_settings().server  # validate before starting anything
    broker = start_broker(kafka_port, quiet=True)
    try:
        config = uvicorn.Config(
            "gateway.app:create_app_from_env",
            factory=True,
            host="127.0.0.1",
            port=port,
            **uvicorn_options(server),
        )
        asyncio.run(_serve_announced(uvicorn.Server(config), port, kafka_port))
    finally:
        stop_broker(broker)
    return 0


async def _serve_announced(server: uvicorn.Server, port: int, kafka_port: int) -> None:
    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(
            f"\nassessment gateway listening on http://127.0.0.1:{port}\n"
            f"Kafka-compatible broker on 127.0.0.1:{kafka_port}\n"
            f"configuration: {os.environ[CONFIG_ENV]}\n"
            f"try:\n\n{example_curl(port)}\n\n"
            "records land in the topic edu.events.v1 on that broker. Ctrl-C stops both.\n",
            file=sys.stderr,
            flush=True,
        )

    announcer = asyncio.create_task(announce())
    await server.serve()
    announcer.cancel()


if __name__ == "__main__":
    sys.exit(main())
