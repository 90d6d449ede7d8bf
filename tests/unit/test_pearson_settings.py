"""Pearson credentials are checked when the configuration is read, not on the first delivery.

A Pearson secret is an AES key (AES-CMAC, keyed with the secret's raw bytes): a wrong length could
never verify, so every delivery would get a 401 and be redelivered for 72 hours. The gateway
refuses to start instead, naming the credential.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.vendors.pearson.settings import PearsonSettings

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, *credentials: str) -> Path:
    """A configuration with one tenant per credential table given."""
    text = "".join(
        f"[[tenants]]\nname = 't{i}'\n[[tenants.credentials]]\nvendor = 'pearson'\n{c}\n"
        for i, c in enumerate(credentials)
    )
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_dev_credential_is_a_16_byte_key_with_its_principal() -> None:
    settings = load_settings(ROOT / "gateway.dev.toml", environ={})
    (pearson,) = [c for t in settings.tenants for c in t.credentials if c.vendor == "pearson"]
    assert pearson.principal == "dev-principal"
    assert len(pearson.secret.encode("utf-8")) == 16


@pytest.mark.parametrize("length", [16, 24, 32])
def test_aes_key_lengths_are_accepted(tmp_path: Path, length: int) -> None:
    path = config(tmp_path, f"principal = 'p'\nsecret = '{'k' * length}'")
    (tenant,) = load_settings(path, environ={}).tenants
    assert len(tenant.credentials[0].secret) == length


@pytest.mark.parametrize("length", [1, 15, 17, 20, 31, 33, 64])
def test_other_lengths_fail_loudly(tmp_path: Path, length: int) -> None:
    path = config(tmp_path, f"principal = 'p'\nsecret = '{'Z' * length}'")
    with pytest.raises(ConfigError, match=f"16, 24 or 32 bytes \\(UTF-8\\), not {length}") as err:
        load_settings(path, environ={})
    assert "tenant 't0' credentials[0]" in err.value.message
    assert "Z" not in err.value.message  # the secret itself is never echoed


def test_the_length_is_counted_in_utf8_bytes_not_characters(tmp_path: Path) -> None:
    eight_two_byte_characters = "é" * 8  # 8 characters, 16 bytes: a valid AES-128 key
    path = config(tmp_path, f"principal = 'p'\nsecret = '{eight_two_byte_characters}'")
    assert load_settings(path, environ={}).tenants
    sixteen_characters = "é" * 16  # 16 characters, 32 bytes: AES-256
    assert load_settings(config(tmp_path, f"principal = 'p'\nsecret = '{sixteen_characters}'"), {})
    twelve = "é" * 12  # 24 bytes
    assert load_settings(config(tmp_path, f"principal = 'p'\nsecret = '{twelve}'"), {})
    nine = "é" * 9  # 18 bytes
    with pytest.raises(ConfigError, match="not 18"):
        load_settings(config(tmp_path, f"principal = 'p'\nsecret = '{nine}'"), environ={})


def test_a_secret_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    path = config(tmp_path, "principal = 'p'\nsecret_env = 'PEARSON_SECRET'")
    assert load_settings(path, environ={"PEARSON_SECRET": "x" * 32}).tenants
    with pytest.raises(ConfigError, match="not 10"):
        load_settings(path, environ={"PEARSON_SECRET": "x" * 10})


@pytest.mark.parametrize("principal", ["", None], ids=["empty", "absent"])
def test_a_pearson_credential_needs_its_principal(tmp_path: Path, principal: str | None) -> None:
    line = "" if principal is None else f"principal = '{principal}'\n"
    path = config(tmp_path, f"{line}secret = '{'k' * 16}'")
    with pytest.raises(ConfigError, match="needs its principal"):
        load_settings(path, environ={})


def test_a_principal_is_configured_once(tmp_path: Path) -> None:
    # Deliveries are matched to a secret by principal alone: a second one would never match.
    path = config(
        tmp_path,
        f"principal = 'p'\nsecret = '{'a' * 16}'",
        f"principal = 'p'\nsecret = '{'b' * 16}'",
    )
    with pytest.raises(ConfigError, match="pearson principal 'p' is configured twice"):
        load_settings(path, environ={})


def test_other_vendors_keep_secrets_of_any_length(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[[tenants]]\nname = 'a'\n[[tenants.credentials]]\nvendor = 'caliper'\nsecret = 'short'\n"
    )
    (tenant,) = load_settings(path, environ={}).tenants
    assert tenant.credentials[0].secret == "short"


def window_config(tmp_path: Path, lines: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[pearson]\n{lines}\n", encoding="utf-8")
    return path


def test_the_timestamp_window_is_on_by_default(tmp_path: Path) -> None:
    # Pearson redelivers for 72 h, possibly with the first timestamp: 72 h plus an hour, and
    # five minutes of a fast clock ahead.
    pearson = load_settings(window_config(tmp_path, ""), environ={}).section(PearsonSettings)
    assert (pearson.max_age_seconds, pearson.max_future_seconds) == (73 * 3600, 300)


@pytest.mark.parametrize("key", ["max_age_seconds", "max_future_seconds"])
def test_a_window_can_be_set_or_turned_off_but_not_negative(tmp_path: Path, key: str) -> None:
    assert (
        getattr(
            load_settings(window_config(tmp_path, f"{key} = 0"), {}).section(PearsonSettings), key
        )
        == 0
    )
    variable = f"GATEWAY_PEARSON_{key.upper()}"
    assert (
        getattr(
            load_settings(window_config(tmp_path, ""), {variable: "60"}).section(PearsonSettings),
            key,
        )
        == 60
    )
    with pytest.raises(ConfigError, match=f"pearson.{key} must be 0"):
        load_settings(window_config(tmp_path, f"{key} = -1"), environ={})
