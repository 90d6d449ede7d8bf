"""Where `gateway dev` runs, for the tools started beside it.

While it runs, `gateway dev` keeps `<server.state_dir>/gateway-dev.json`: its process id and the
address of its broker. `gateway tail`, `gateway replay` and `gateway spool` read it when nothing
names the Kafka to use: neither `GATEWAY_KAFKA_BOOTSTRAP_SERVERS` nor `GATEWAY_CONFIG` is set.
So after `gateway dev --kafka-port 19092`, `gateway tail` run from the same directory reads
127.0.0.1:19092, and says so on stderr. Precedence, first wins:

1. `GATEWAY_KAFKA_BOOTSTRAP_SERVERS`, or the configuration file `GATEWAY_CONFIG` names;
2. the `gateway dev` running here (this file, while its process lives);
3. the default, 127.0.0.1:9092.

The file is removed when `gateway dev` stops; one left by a process that was killed is ignored.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Final

import orjson

from gateway.settings import CONFIG_ENV, Settings, load_settings

DEV_FILE: Final = "gateway-dev.json"
BOOTSTRAP_ENV: Final = "GATEWAY_KAFKA_BOOTSTRAP_SERVERS"


def write(state_dir: Path, bootstrap_servers: str) -> Path:
    """Say where this `gateway dev` runs; raises OSError when the state directory cannot be
    made or written (before anything is started)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / DEV_FILE
    path.write_bytes(orjson.dumps({"pid": os.getpid(), "bootstrap_servers": bootstrap_servers}))
    return path


def remove(path: Path) -> None:
    """Remove the file, unless another `gateway dev` started in the same place since."""
    if _read(path).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def running(state_dir: Path) -> str | None:
    """The broker address of the `gateway dev` running with this state directory, if any."""
    found = _read(state_dir / DEV_FILE)
    pid, servers = found.get("pid"), found.get("bootstrap_servers")
    if not isinstance(pid, int) or not isinstance(servers, str) or not _alive(pid):
        return None
    return servers


def tool_settings() -> Settings:
    """The settings of a tool beside the gateway: `load_settings`, with the Kafka of the
    `gateway dev` running here when nothing names one (see the module's docstring)."""
    settings = load_settings()
    if BOOTSTRAP_ENV in os.environ or CONFIG_ENV in os.environ:
        return settings
    state_dir = Path(settings.server.state_dir)
    servers = running(state_dir)
    if servers is None:
        return settings
    print(
        f"gateway: using the broker of the `gateway dev` running here, {servers} "
        f"({state_dir / DEV_FILE}; {BOOTSTRAP_ENV} chooses another)",
        file=sys.stderr,
    )
    kafka = dataclasses.replace(settings.kafka, bootstrap_servers=servers)
    return dataclasses.replace(settings, kafka=kafka)


def _read(path: Path) -> dict[str, object]:
    try:
        found = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}  # none, or not one this module wrote: nothing runs here
    return found if isinstance(found, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's: alive
    return True
