"""Canvas Live Events for the tests: the published examples (tests/fixtures/canvas/in/
live-events/, see its SOURCES.md), and signing them as Canvas does with a key made here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

LIVE_EVENTS = Path(__file__).resolve().parent / "fixtures" / "canvas" / "in" / "live-events"
GOLDEN = Path(__file__).resolve().parent / "fixtures" / "canvas" / "golden" / "live-events"


def examples() -> list[tuple[str, dict[str, Any]]]:
    """(name, payload) of every published example, both formats: `<format>-<file>-<n>`."""
    found = []
    for path in sorted(LIVE_EVENTS.glob("*/*.json")):
        document = orjson.loads(path.read_bytes())
        for index, example in enumerate(document["examples"]):
            found.append((f"{path.parent.name}-{path.stem}-{index}", example["payload"]))
    return found


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(event: Any, key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    """The event as Canvas signs it: a compact JWT, RS256, `kid` in its header."""
    return jwt.encode({**event, **claims}, key, algorithm="RS256", headers={"kid": kid})
