"""Secret rotation without downtime: a credential holds several active secrets (from the file, a
list in a variable, or a secrets file), every scheme accepts each of them and nothing else, and
the configuration refuses what could never work. Signatures are built here with hmac and
cryptography directly, not with the gateway's helpers.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.auth import FORM, Authenticator, Credentials
from gateway.errors import ConfigError, Unauthorized
from gateway.settings import Settings, load_settings
from gateway.vendors import registry

OLD, NEW, RETIRED = "old-token", "new-token", "retired-token"
PEARSON_OLD, PEARSON_NEW = "old-pearson-key!", "new-pearson-key!"


def load(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "gateway.toml"
    path.write_text(toml, encoding="utf-8")
    return load_settings(path, env or {})


def credential_toml(vendor: str, source: str, principal: str = "") -> str:
    extra = f"principal = '{principal}'\n" if principal else ""
    return (
        "[[tenants]]\nname = 'uni'\n[[tenants.credentials]]\n"
        f"vendor = '{vendor}'\n{extra}{source}\n"
    )


def secrets_of(settings: Settings) -> tuple[str, ...]:
    return settings.tenants[0].credentials[0].active_secrets


def test_secrets_array_in_the_file(tmp_path: Path) -> None:
    settings = load(tmp_path, credential_toml("caliper", f"secrets = ['{OLD}', '{NEW}']"))
    assert secrets_of(settings) == (OLD, NEW)


def test_secrets_env_holds_several_comma_separated(tmp_path: Path) -> None:
    toml = credential_toml("caliper", "secrets_env = 'CALIPER_TOKENS'")
    settings = load(tmp_path, toml, {"CALIPER_TOKENS": f" {OLD} , {NEW},"})
    assert secrets_of(settings) == (OLD, NEW)


def test_secret_env_still_holds_one_secret_commas_included(tmp_path: Path) -> None:
    toml = credential_toml("caliper", "secret_env = 'CALIPER_TOKEN'")
    settings = load(tmp_path, toml, {"CALIPER_TOKEN": "a,b"})
    assert secrets_of(settings) == ("a,b",)


def test_secret_file_one_secret_per_line(tmp_path: Path) -> None:
    secrets = tmp_path / "caliper-secrets"
    secrets.write_text(f"{OLD}\n\n  {NEW}  \r\n", encoding="utf-8")
    settings = load(tmp_path, credential_toml("caliper", f"secret_file = '{secrets}'"))
    assert secrets_of(settings) == (OLD, NEW)


@pytest.mark.parametrize(
    ("source", "env", "message"),
    [
        (f"secret = '{OLD}'\nsecrets = ['{NEW}']", {}, "not secret and secrets"),
        ("secrets = []", {}, "secrets holds no secret"),
        ("secrets = ['ok', '']", {}, "array of non-empty strings"),
        ("secrets_env = 'UNSET'", {}, "'UNSET' (secrets_env) is not set"),
        ("secrets_env = 'COMMAS'", {"COMMAS": " , ,"}, "secrets_env holds no secret"),
        ("secret_file = '/nonexistent/secret'", {}, "cannot be read (FileNotFoundError)"),
    ],
)
def test_bad_secret_sources_stop_start_up(
    tmp_path: Path, source: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(tmp_path, credential_toml("caliper", source), env)


def test_an_empty_secret_file_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="secret_file holds no secret"):
        load(tmp_path, credential_toml("caliper", f"secret_file = '{empty}'"))


def test_a_rotated_secret_shared_with_another_tenant_stops_start_up(tmp_path: Path) -> None:
    toml = (
        "[[tenants]]\nname = 'a'\n[[tenants.credentials]]\nvendor = 'caliper'\n"
        f"secrets = ['{OLD}', '{NEW}']\n"
        "[[tenants]]\nname = 'b'\n[[tenants.credentials]]\nvendor = 'caliper'\n"
        f"secret = '{NEW}'\n"
    )
    with pytest.raises(ConfigError, match="each credential must map to one tenant"):
        load(tmp_path, toml)


def test_every_pearson_secret_must_be_an_aes_key(tmp_path: Path) -> None:
    toml = credential_toml("pearson", f"secrets = ['{PEARSON_OLD}', 'short']", principal="p")
    with pytest.raises(ConfigError, match="16, 24 or 32 bytes"):
        load(tmp_path, toml)


def rotating(tmp_path: Path) -> Authenticator:
    """An authenticator whose every vendor credential holds an old and a new secret."""
    toml = "".join(
        (
            "[[tenants]]\nname = 'uni'\n",
            f"[[tenants.credentials]]\nvendor = 'caliper'\nsecrets = ['{OLD}', '{NEW}']\n",
            f"[[tenants.credentials]]\nvendor = 'canvas'\nsecrets = ['{OLD}', '{NEW}']\n",
            f"[[tenants.credentials]]\nvendor = 'inspera'\nsecrets = ['{OLD}', '{NEW}']\n",
            "[[tenants.credentials]]\nvendor = 'pearson'\nprincipal = 'p'\n",
            f"secrets = ['{PEARSON_OLD}', '{PEARSON_NEW}']\n",
        )
    )
    return Authenticator(load(tmp_path, toml).tenants)


def caliper(token: str) -> Credentials:
    return Credentials({"authorization": f"Bearer {token}"}, {})


def canvas(token: str) -> Credentials:
    return Credentials({}, {"access_token": token})


def inspera(secret: str) -> Credentials:
    body = b'{"event":"confirm_final_grades","contextObjectId":1}'
    signature = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return Credentials({"x-inspera-signature": signature}, {}, "application/json", body)


def pearson(secret: str) -> Credentials:
    # Signed now, in Pearson's format: the default window refuses a stale timestamp.
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message_id, message_type = "m-1", "t"
    content_type, payload = "application/json", '{"eventId":"e"}'
    cmac = CMAC(algorithms.AES(secret.encode()))
    cmac.update((timestamp + message_id + message_type + content_type + payload).encode())
    fields = {
        "MESSAGE-ID": message_id,
        "MESSAGE-TYPE": message_type,
        "PAYLOAD-CONTENT-TYPE": content_type,
        "PAYLOAD": payload,
        "AUTHORIZATION": f"p|{timestamp}|{cmac.finalize().hex()}",
    }
    return Credentials({}, {}, FORM, urlencode(fields).encode())


SCHEMES = [
    ("caliper", caliper),
    ("canvas", canvas),
    ("inspera", inspera),
    ("pearson", pearson),
]


@pytest.mark.parametrize(("vendor", "present"), SCHEMES)
def test_every_scheme_accepts_each_active_secret_and_nothing_else(
    tmp_path: Path, vendor: str, present: Callable[[str], Credentials]
) -> None:
    auth = rotating(tmp_path)
    scheme = registry()[vendor]  # the vendor, whose verifier is its scheme
    if vendor == "pearson":
        old, new, retired = PEARSON_OLD, PEARSON_NEW, "retired-pearson!"
    else:
        old, new, retired = OLD, NEW, RETIRED
    assert auth.authenticate(scheme, present(old)) == "uni"
    assert auth.authenticate(scheme, present(new)) == "uni"
    with pytest.raises(Unauthorized):
        auth.authenticate(scheme, present(retired))
