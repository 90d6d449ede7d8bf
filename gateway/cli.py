"""The `gateway` command: `broker`, `serve` and `dev` (the fixed interface of docs/architecture.md);
`replay`, `spool` and the vendors' own commands (`gateway <vendor> ...`) for operators; `tail`,
`schema` and `validate` for consumers and the vendors integrating with the gateway
(gateway/tools/)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import orjson
import uvicorn

from gateway import __version__, tools
from gateway.errors import ConfigError
from gateway.http_server import GatewayServer, serve, uvicorn_options
from gateway.kafka.broker import broker_command, port_in_use, start_broker, stop_broker
from gateway.settings import CONFIG_ENV, Settings, load_settings
from gateway.tools import devfile
from gateway.vendors import registry
from gateway.vendors.base import Command, CommandContext

if TYPE_CHECKING:  # the pipeline (and its Kafka client) only when a command publishes
    from gateway.pipeline import Pipeline

DEV_CONFIG = "gateway.dev.toml"


def example_curl(port: int) -> str:
    """A curl that posts the example of the first vendor that has one (`Vendor.example`) to a
    gateway started with the dev configuration."""
    vendor, example = next(
        (vendor, vendor.example) for vendor in registry().values() if vendor.example is not None
    )
    headers = " ".join(f"-H '{name}: {value}'" for name, value in example.headers)
    return (
        f"curl -i http://127.0.0.1:{port}{vendor.path} \\\n"
        f"  {headers} \\\n"
        f"  --data '{example.body}'"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    broker = commands.add_parser("broker", help="run the embedded Kafka-compatible broker")
    broker.add_argument(
        "--port", type=int, default=9092, help="the port it listens on (default: 9092)"
    )

    serve = commands.add_parser("serve", help=f"run the gateway (config from ${CONFIG_ENV})")
    serve.add_argument("--host", default=None, help="default: server.host of the config")
    serve.add_argument("--port", type=int, default=None, help="default: server.port of the config")
    serve.add_argument("--workers", type=int, default=None, help="default: server.workers")
    _log_format_option(serve)

    dev = commands.add_parser("dev", help=f"run broker + gateway with {DEV_CONFIG}")
    dev.add_argument("--port", type=int, default=8080, help="the gateway's port (default: 8080)")
    dev.add_argument(
        "--kafka-port", type=int, default=9092, help="the broker's port (default: 9092)"
    )
    _log_format_option(dev, f"json, the logging.format of {DEV_CONFIG}")

    vendor_commands = _add_vendor_commands(commands)

    replay = commands.add_parser("replay", help="publish dead letters again after a fix")
    replay.add_argument(
        "--vendor", default=None, choices=_vendor_names(), help="only this vendor's letters"
    )
    replay.add_argument(
        "--reason", default=None, choices=_reasons(), help="only letters with this reason"
    )
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
        "replay": _replay,
        "spool": _spool,
        "tail": tools.tail,
        "schema": tools.schema,
        "validate": tools.validate,
        **dict.fromkeys(vendor_commands, _vendor_command),
    }
    try:
        return commands_run[args.command](args)
    except ConfigError as error:
        print(f"gateway: {error.message}", file=sys.stderr)
        return 2
    except OSError as error:
        # A path a command cannot use (a configuration file, the state directory): one line.
        print(f"gateway: {_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _os_error(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}"


def _vendor_names() -> list[str]:
    return sorted(registry())


def _add_vendor_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> list[str]:
    """`gateway <vendor> <command>` for each vendor with commands of its own; their names."""
    added = []
    for vendor in registry().values():
        if vendor.commands is None:
            continue
        group = commands.add_parser(vendor.name, help=vendor.commands.help)
        own = group.add_subparsers(dest=f"{vendor.name}_command", required=True)
        for command in vendor.commands.commands:
            parser = own.add_parser(command.name, help=command.help)
            command.arguments(parser)
            parser.set_defaults(vendor_command=command)
        added.append(vendor.name)
    return added


def _vendor_command(args: argparse.Namespace) -> int:
    """Run a vendor's command with the settings loaded and the logs set up."""
    from gateway.observability import configure_logging  # noqa: PLC0415  # the server's logs

    settings = load_settings()
    configure_logging(settings.logging)
    command: Command = args.vendor_command
    return command.run(args, CommandContext(settings, lambda: _publishing(settings)))


@asynccontextmanager
async def _publishing(settings: Settings) -> AsyncIterator[Pipeline]:
    """A pipeline publishing to Kafka, its producer started for the block and stopped after. No
    spool, which belongs to the server: a command waits for Kafka's own acknowledgement."""
    from gateway.kafka.publisher import Publisher  # noqa: PLC0415  # Kafka client only when asked
    from gateway.pipeline import Pipeline  # noqa: PLC0415  # Kafka client only when asked

    publisher = Publisher(settings.kafka, settings.server)
    pipeline = Pipeline.for_settings(settings, publisher)
    await publisher.start()
    try:
        yield pipeline
    finally:
        await publisher.stop()


def _reasons() -> list[str]:
    """The reasons a dead letter can have: its schema's enum."""
    from gateway.tools.schema_cmd import DEADLETTER_SCHEMA  # noqa: PLC0415

    schema = orjson.loads(DEADLETTER_SCHEMA.read_bytes())
    reasons: list[str] = schema["properties"]["reason"]["enum"]
    return reasons


def _log_format_option(
    command: argparse.ArgumentParser, default: str = "logging.format of the configuration"
) -> None:
    command.add_argument(
        "--log-format",
        choices=("json", "console"),
        default=None,
        help=f"json (one object per line) or console (lines for humans) (default: {default})",
    )


def _broker(port: int) -> int:
    print(f"embedded Kafka-compatible broker on 127.0.0.1:{port} (in memory; Ctrl-C stops it)")
    sys.stdout.flush()
    return subprocess.call(broker_command(port))  # noqa: S603  # our own binary


def _serve(host: str | None, port: int | None, workers: int | None) -> int:
    server = load_settings().server  # fail here, loudly, before uvicorn forks workers
    config = uvicorn.Config(
        "gateway.app:create_app_from_env",
        factory=True,
        host=host or server.host,
        port=port or server.port,
        workers=workers or server.workers,
        **uvicorn_options(server),  # the HTTP limits, proxies trusted, uvicorn's own logging
    )
    # Both ports bound here, before any worker starts; several workers share one metrics dir.
    serve(config, server)
    return 0


def _replay(args: argparse.Namespace) -> int:
    from gateway.tools.replay import replay_command  # noqa: PLC0415  # the Kafka client

    return replay_command(args.vendor, args.reason, args.since, args.until, args.dry_run)


def _spool(args: argparse.Namespace) -> int:
    from gateway.tools.spool import spool_command  # noqa: PLC0415  # SQLite

    return spool_command(args.drain)


def _dev_config() -> Path:
    local = Path.cwd() / DEV_CONFIG
    return local if local.is_file() else Path(__file__).resolve().parent.parent / DEV_CONFIG


def _dev(port: int, kafka_port: int) -> int:
    os.environ[CONFIG_ENV] = str(_dev_config())
    os.environ["GATEWAY_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{kafka_port}"
    os.environ["GATEWAY_SERVER_PORT"] = str(port)
    settings = load_settings()  # validate before starting anything
    server = settings.server
    if port_in_use(port):
        # Checked like the broker's port, before anything starts (the broker first).
        raise ConfigError(
            f"port {port} on 127.0.0.1 is already in use (is a gateway already running? "
            "--port chooses another)"
        )
    if server.admin_port and port_in_use(server.admin_port):
        raise ConfigError(
            f"the admin port {server.admin_port} on 127.0.0.1 is already in use (is a gateway "
            "already running? GATEWAY_SERVER_ADMIN_PORT chooses another)"
        )
    # Where the tools find this broker (gateway/tools/devfile.py); also proves the state directory.
    written = devfile.write(Path(server.state_dir), f"127.0.0.1:{kafka_port}")
    stopping = _DevSignals()
    services = ExitStack()
    try:
        # What the vendors' dev configuration needs beside the gateway (a local key server).
        for vendor in registry().values():
            if vendor.dev_service is not None:
                services.enter_context(vendor.dev_service(settings))
        broker = start_broker(kafka_port, quiet=True)
        try:
            config = uvicorn.Config(
                "gateway.app:create_app_from_env",
                factory=True,
                host="127.0.0.1",
                port=port,
                **uvicorn_options(server),
            )
            served = GatewayServer(config, server.admin_port)
            stopping.server = served
            asyncio.run(_serve_announced(served, port, kafka_port, server.admin_port))
        finally:
            stop_broker(broker)  # last: the gateway has drained into it
    finally:
        services.close()
        stopping.restore()
        devfile.remove(written)
    return 0


class _DevSignals:
    """How `gateway dev` stops: gracefully on SIGINT (Ctrl-C), SIGTERM and SIGHUP (its terminal
    closing: the broker, in a session of its own, would not get it), then exit 0.

    While the gateway serves, uvicorn takes SIGINT and SIGTERM and drains; afterwards it raises
    the signal again for the process's previous handler, which by default ends the process
    (SIGTERM, before the broker is stopped) or raises KeyboardInterrupt (exit 130, which `make`
    reports as an error). These handlers are that previous handler: a signal once the server
    exists asks it to stop (a no-op when it has already), one before it interrupts the start."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}

    def restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self.server is None:
            raise KeyboardInterrupt  # while the broker starts: stop it (start_broker) and go
        self.server.handle_exit(signal.SIGTERM, frame)


async def _serve_announced(
    server: uvicorn.Server, port: int, kafka_port: int, admin_port: int = 0
) -> None:
    admin = admin_port or port

    async def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        print(
            f"\nassessment gateway listening on http://127.0.0.1:{port}\n"
            f"health, readiness, metrics: http://127.0.0.1:{admin}/readyz, /healthz, /metrics\n"
            f"Kafka-compatible broker on 127.0.0.1:{kafka_port}\n"
            f"configuration: {os.environ[CONFIG_ENV]}\n"
            f"try:\n\n{example_curl(port)}\n\n"
            "records land in the topic edu.events.v1 on that broker: `gateway tail` prints them\n"
            "(from this directory; from anywhere else:\n\n"
            f"GATEWAY_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{kafka_port} gateway tail\n\n"
            "and the same variable for `gateway replay` and `gateway spool`). Ctrl-C stops both.\n",
            file=sys.stderr,
            flush=True,
        )

    announcer = asyncio.create_task(announce())
    await server.serve()
    announcer.cancel()


if __name__ == "__main__":
    sys.exit(main())
