"""`gateway spool`: what the local spool and its quarantine hold, and (`--drain`) forwarding the
spool files no running gateway holds to Kafka.

Run where the gateway runs: the spool is `<server.state_dir>/spool` (gateway/kafka/spool.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from gateway.settings import Settings, load_settings
from gateway.tools import logs_to_stderr
from gateway.tools.devfile import tool_settings


def spool_command(drain: bool) -> int:
    """Print the spool's slots and quarantine (after draining, with `drain`); 1 when there is no
    spool directory here."""
    from gateway.kafka.spool import inspect_quarantine, inspect_spool  # noqa: PLC0415  # SQLite

    settings = tool_settings() if drain else load_settings()
    state_dir = settings.server.state_dir
    directory = Path(state_dir).absolute() / "spool"
    if not directory.is_dir():
        # A gateway makes it when it starts: it ran elsewhere, or a relative state_dir is
        # taken from another working directory. Draining would make an empty one here.
        relative = "" if Path(state_dir).is_absolute() else ", relative to the working directory"
        print(
            f"gateway: no spool directory {directory}: it does not exist (server.state_dir is "
            f"{state_dir!r}{relative}; run this where the gateway runs, or set "
            "GATEWAY_SERVER_STATE_DIR)",
            file=sys.stderr,
        )
        return 1
    if drain:
        logs_to_stderr(settings)
        forwarded = asyncio.run(_drain(settings))
        print(f"forwarded {forwarded} records to Kafka")
    slots = inspect_spool(directory)
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
    from gateway.kafka.publisher import Publisher  # noqa: PLC0415  # Kafka client only when asked

    publisher = Publisher(settings.kafka, settings.server, settings.spool)
    await publisher.start()
    try:
        await publisher.drained()
    finally:
        await publisher.stop()
    return publisher.forwarded_total
