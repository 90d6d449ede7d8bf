"""The `gateway` command: `broker`, `serve` and `dev` (the fixed interface of docs/DESIGN.md)."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway import __version__
from gateway.broker import broker_command, start_broker, stop_broker
from gateway.errors import ConfigError
from gateway.settings import CONFIG_ENV, load_settings

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

    dev = commands.add_parser("dev", help=f"run broker + gateway with {DEV_CONFIG}")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--kafka-port", type=int, default=9092)

    args = parser.parse_args(argv)
    try:
        if args.command == "broker":
            return _broker(args.port)
        if args.command == "serve":
            return _serve(args.host, args.port, args.workers)
        return _dev(args.port, args.kafka_port)
    except ConfigError as error:
        print(f"gateway: {error.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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
        access_log=False,  # the gateway writes its own line per request
        log_level="warning",
    )
    return 0


def _dev_config() -> Path:
    local = Path.cwd() / DEV_CONFIG
    return local if local.is_file() else Path(__file__).resolve().parent.parent / DEV_CONFIG


def _dev(port: int, kafka_port: int) -> int:
    os.environ[CONFIG_ENV] = str(_dev_config())
    os.environ["GATEWAY_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{kafka_port}"
    os.environ["GATEWAY_SERVER_PORT"] = str(port)
    load_settings()  # validate before starting anything
    broker = start_broker(kafka_port, quiet=True)
    try:
        config = uvicorn.Config(
            "gateway.app:create_app_from_env",
            factory=True,
            host="127.0.0.1",
            port=port,
            access_log=False,
            log_level="warning",
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
