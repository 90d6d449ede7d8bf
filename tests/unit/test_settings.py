"""Settings: the TOML file, GATEWAY_* overrides, and loud failures on anything wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.vendors.inspera.settings import InsperaSettings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_dev_config_has_the_documented_tenant_and_credentials() -> None:
    settings = load_settings(ROOT / "gateway.dev.toml", environ={})
    (demo,) = settings.tenants
    assert demo.name == "demo"
    by_vendor = {c.vendor: c for c in demo.credentials}
    assert by_vendor["caliper"].secret == "dev-token"
    assert by_vendor["canvas"].secret == "dev-token"
    assert (by_vendor["pearson"].principal, by_vendor["pearson"].secret) == (
        "dev-principal",
        "dev-pearson-key!",
    )
    assert by_vendor["inspera"].secret == "dev-inspera-secret"
    assert settings.kafka.enable_idempotence is False  # the embedded broker cannot do it
    assert settings.kafka.canonical_topic == "edu.events.v1"
    assert settings.kafka.deadletter_topic == "edu.events.deadletter.v1"


def test_defaults_are_production_safe() -> None:
    settings = load_settings(None, environ={})
    assert settings.kafka.enable_idempotence is True
    assert settings.server.max_body_bytes == 4 * 1024 * 1024
    assert settings.canonical.include_original is False


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafka]\nbootstrap_servers = 'a:1'\nlinger_ms = 5\n")
    env = {
        "GATEWAY_KAFKA_BOOTSTRAP_SERVERS": "b:2",
        "GATEWAY_KAFKA_LINGER_MS": "20",
        "GATEWAY_KAFKA_ENABLE_IDEMPOTENCE": "false",
        "GATEWAY_DEDUPE_WINDOW_SECONDS": "60",
    }
    settings = load_settings(path, environ=env)
    assert settings.kafka.bootstrap_servers == "b:2"
    assert settings.kafka.linger_ms == 20
    assert settings.kafka.enable_idempotence is False
    assert settings.dedupe.window_seconds == 60.0


def test_config_file_is_named_by_gateway_config(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9999\n")
    assert load_settings(environ={"GATEWAY_CONFIG": str(path)}).server.port == 9999


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[kafka]\nlinger_ms = 'soon'\n", {}, "kafka.linger_ms must be of type int"),
        ("[kafka]\nlingerms = 5\n", {}, "unknown setting(s) in [kafka]: lingerms"),
        ("[kafka]\ncompression = 'brotli'\n", {}, "kafka.compression must be one of"),
        ("[server]\nport = 0\n", {}, "server.port must be positive"),
        ("[srever]\n", {}, "unknown configuration section(s): srever"),
        ("", {"GATEWAY_SERVER_PORT": "eighty"}, "GATEWAY_SERVER_PORT must be of type int"),
        ("", {"GATEWAY_KAFKA_CREATE_TOPICS": "maybe"}, "must be true or false"),
        ("[[tenants]]\n", {}, "tenants[0].name is missing"),
        (
            "[[tenants]]\nname='a'\n[[tenants.credentials]]\nvendor='caliper'\n",
            {},
            "secret (or secret_env) is missing",
        ),
        (
            "[[tenants]]\nname='a'\n[[tenants.credentials]]\nvendor='caliper'\nsecret_env='NOPE'\n",
            {},
            "environment variable 'NOPE' (secret_env) is not set",
        ),
        (
            "[[tenants]]\nname='a'\n[[tenants.credentials]]\nvendor='caliper'\nsecret='t'\n"
            "[[tenants]]\nname='b'\n[[tenants.credentials]]\nvendor='caliper'\nsecret='t'\n",
            {},
            "each credential must map to one tenant",
        ),
        ("not toml = = =", {}, "is not valid TOML"),
    ],
)
def test_invalid_configuration_fails_loudly(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), environ=env)
    assert message in raised.value.message


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_secret_can_come_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[[tenants]]\nname='uni'\n[[tenants.credentials]]\nvendor='caliper'\nsecret_env='TOK'\n",
    )
    settings = load_settings(path, environ={"TOK": "s3cret"})
    assert settings.tenants[0].credentials[0].secret == "s3cret"


def test_list_settings_from_file_and_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[inspera]\ndownload_hosts = ['a.example', '*.b.example']\n")
    assert load_settings(path, environ={}).section(InsperaSettings).download_hosts == (
        "a.example",
        "*.b.example",
    )
    env = {"GATEWAY_INSPERA_DOWNLOAD_HOSTS": "x.example, *.y.example"}
    assert load_settings(path, environ=env).section(InsperaSettings).download_hosts == (
        "x.example",
        "*.y.example",
    )
    with pytest.raises(ConfigError, match="must be an array of strings"):
        load_settings(write(tmp_path, "[inspera]\ndownload_hosts = 'a'\n"), environ={})


def test_a_variable_that_names_no_setting_is_refused_with_the_one_meant() -> None:
    environ = {"GATEWAY_KAFKA_BOOTSTRAP_SERVER": "kafka-1:9092", "GATEWAY_SPOL_ENABLED": "false"}
    with pytest.raises(ConfigError) as refused:
        load_settings(None, environ=environ)
    message = refused.value.message
    assert "GATEWAY_KAFKA_BOOTSTRAP_SERVER (did you mean GATEWAY_KAFKA_BOOTSTRAP_SERVERS" in message
    assert "kafka.bootstrap_servers" in message
    assert "GATEWAY_SPOL_ENABLED (did you mean GATEWAY_SPOOL_ENABLED" in message
    assert "kafka-1" not in message  # names only: a value may be a secret


def test_a_variable_far_from_every_setting_is_refused_without_a_guess() -> None:
    with pytest.raises(ConfigError, match=r"unknown variable\(s\): GATEWAY_XYZZY: "):
        load_settings(None, environ={"GATEWAY_XYZZY": "1"})


def test_variables_that_are_not_settings_but_are_named_are_taken(tmp_path: Path) -> None:
    # The configuration's own name, CGI's variable, and secrets' variables the file names.
    config = write(
        tmp_path,
        '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_username = "u"\n'
        'sasl_password_env = "GATEWAY_KAFKA_PASSWORD"\n'
        '[[tenants]]\nname = "t"\n[[tenants.credentials]]\nvendor = "caliper"\n'
        'secret_env = "GATEWAY_CALIPER_TOKEN"\n',
    )
    environ = {
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_INTERFACE": "CGI/1.1",
        "GATEWAY_KAFKA_PASSWORD": "p",
        "GATEWAY_CALIPER_TOKEN": "a-token",
    }
    settings = load_settings(None, environ=environ)
    assert settings.tenants[0].credentials[0].secret == "a-token"
