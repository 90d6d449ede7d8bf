"""Kafka TLS and SASL settings: refused at start-up when incomplete, and spelled for each client
library. (A TLS-only broker is tested for real in tests/integration/test_kafka_tls.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.kafka.log import ClientLog
from gateway.kafka.security import aiokafka_connection, librdkafka_connection
from gateway.settings import KafkaSettings, Settings, load_settings
from tests.support.certificates import self_signed

PASSWORD = "s3cret-sasl-password"


def settings_from(tmp_path: Path, kafka: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "gateway.toml"
    path.write_text("[kafka]\n" + kafka)
    return load_settings(path, environ=env or {})


def kafka_from(env: dict[str, str], **settings: str) -> KafkaSettings:
    """`[kafka]` as loaded from GATEWAY_KAFKA_<NAME> variables beside `env`."""
    variables = {f"GATEWAY_KAFKA_{name}": value for name, value in settings.items()}
    return load_settings(None, environ={**env, **variables}).kafka


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    cert, _ = self_signed(tmp_path)
    return cert


@pytest.mark.parametrize(
    ("kafka", "env", "message"),
    [
        ("security_protocol = 'TLS'\n", {}, "kafka.security_protocol must be one of"),
        ("security_protocol = 'SASL_SSL'\nsasl_mechanism = 'GSSAPI'\n", {}, "must be one of"),
        ("security_protocol = 'SASL_SSL'\n", {}, "kafka.sasl_username is required"),
        (
            "security_protocol = 'SASL_SSL'\nsasl_username = 'gw'\n",
            {},
            "read from $KAFKA_SASL_PASSWORD (kafka.sasl_password_env), which is not set",
        ),
        ("ssl_ca_file = '/etc/hosts'\n", {}, "security_protocol is not SSL or SASL_SSL"),
        ("security_protocol = 'SSL'\nssl_ca_file = '/nope.pem'\n", {}, "is not a file"),
        (
            "security_protocol = 'SSL'\nssl_cert_file = '/etc/hosts'\n",
            {},
            "kafka.ssl_cert_file and kafka.ssl_key_file go together",
        ),
    ],
)
def test_incomplete_security_settings_are_refused_at_start_up(
    tmp_path: Path, kafka: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_from(tmp_path, kafka, env)
    assert message in raised.value.message


def test_plaintext_names_only_the_brokers_to_either_client() -> None:
    kafka = load_settings(None, environ={}).kafka
    options = librdkafka_connection(kafka, "gw")
    assert isinstance(options.pop("logger"), ClientLog)  # librdkafka's lines go to our log
    assert options == {"bootstrap.servers": "127.0.0.1:9092", "client.id": "gw"}
    assert aiokafka_connection(kafka) == {"bootstrap_servers": "127.0.0.1:9092"}


def test_sasl_ssl_is_spelled_for_librdkafka_and_aiokafka(ca_file: Path) -> None:
    env = {"KAFKA_SASL_PASSWORD": PASSWORD}
    kafka = kafka_from(
        env,
        SECURITY_PROTOCOL="SASL_SSL",
        SASL_MECHANISM="SCRAM-SHA-512",
        SASL_USERNAME="gateway",
        SSL_CA_FILE=str(ca_file),
    )
    options = librdkafka_connection(kafka, "gw", env)
    assert isinstance(options.pop("logger"), ClientLog)
    assert options == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "gw",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "gateway",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(ca_file),
    }
    options = aiokafka_connection(kafka, env)
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gateway",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    # The settings name the variable; the password itself is in no settings object.
    assert PASSWORD not in repr(kafka)


def test_the_password_is_read_from_the_variable_the_settings_name() -> None:
    env = {"MSK_PASSWORD": PASSWORD}
    kafka = kafka_from(
        env,
        SECURITY_PROTOCOL="SASL_PLAINTEXT",
        SASL_USERNAME="gateway",
        SASL_PASSWORD_ENV="MSK_PASSWORD",
    )
    options = librdkafka_connection(kafka, "gw", env)
    assert options["sasl.password"] == PASSWORD
    assert options["sasl.mechanism"] == "PLAIN"  # the default mechanism
    assert "ssl.ca.location" not in options
    assert "ssl_context" not in aiokafka_connection(kafka, env)  # no TLS without SSL
