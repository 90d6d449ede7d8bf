"""Canvas Live Events in the dev configuration: a dev-only signing key, its JWKS served on
loopback while `gateway dev` runs, and `gateway canvas sign-live-event` to sign an event with it.

The key pair is generated at first use into `<server.state_dir>/canvas-live-events-dev-key.pem`
(never committed: nothing in the repository signs anything). It is a dev key: a gateway whose
`canvas.live_events_jwks_url` is Instructure's never trusts it.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import jwt
import orjson
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.settings import Settings
from gateway.vendors.base import Command, CommandContext
from gateway.vendors.canvas.jwks import RS256, jwks_document
from gateway.vendors.canvas.settings import CanvasSettings

DEV_KEY_FILE: Final = "canvas-live-events-dev-key.pem"
DEV_KID: Final = "dev-live-events-key"
_LOOPBACK: Final = frozenset({"127.0.0.1", "localhost"})

log = structlog.get_logger("gateway.canvas.dev")


def dev_key(state_dir: Path) -> rsa.RSAPrivateKey:
    """The dev signing key, generated (and kept, owner-only) at first use."""
    path = state_dir / DEV_KEY_FILE
    if not path.is_file():
        state_dir.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.touch(mode=0o600)
        path.write_bytes(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key")
    return loaded


def sign(event: Any, key: rsa.RSAPrivateKey, kid: str = DEV_KID) -> str:
    """`event` as Canvas sends it with signing on: a compact JWT, RS256, naming its `kid`."""
    return jwt.encode(event, key, algorithm=RS256, headers={"kid": kid})


@contextmanager
def dev_jwks(settings: Settings) -> Iterator[None]:
    """Serves the dev key's JWKS at `canvas.live_events_jwks_url` while `gateway dev` runs,
    when that URL is on loopback (the dev configuration's); otherwise nothing."""
    url = urlsplit(settings.section(CanvasSettings).live_events_jwks_url)
    if url.scheme != "http" or url.hostname not in _LOOPBACK or url.port is None:
        yield
        return
    public = dev_key(Path(settings.server.state_dir)).public_key()
    document = orjson.dumps(jwks_document({DEV_KID: public}))
    path = url.path or "/"

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's name
            found = self.path.split("?")[0] == path
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document) if found else 0))
            self.end_headers()
            if found:
                self.wfile.write(document)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the gateway's own log says when it fetched the keys."""

    try:
        server = ThreadingHTTPServer(("127.0.0.1", url.port), Jwks)
    except OSError as error:
        print(
            f"the dev Live Events JWKS cannot listen on 127.0.0.1:{url.port} ({error}): "
            "signed Live Events will be refused",
            file=sys.stderr,
        )
        yield
        return
    thread = threading.Thread(target=server.serve_forever, name="dev-jwks", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _sign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the Live Event (JSON); - reads standard input")


def _sign_run(args: argparse.Namespace, context: CommandContext) -> int:
    text = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        print(f"{args.file} is not JSON: {error}", file=sys.stderr)
        return 2
    if not isinstance(event, dict):
        print(f"{args.file} is not a JSON object", file=sys.stderr)
        return 2
    key = dev_key(Path(context.settings.server.state_dir))
    print(sign(event, key))
    return 0


SIGN_LIVE_EVENT: Final = Command(
    name="sign-live-event",
    help="sign a Live Event with the dev key (what `gateway dev`'s JWKS publishes), as Canvas "
    "does with signed JWT payloads on: prints the JWT",
    arguments=_sign_arguments,
    run=_sign_run,
)
