"""How the gateway's Kafka clients connect: TLS and SASL options for both client libraries.

librdkafka (the producer, the Canvas quiz-log consumer) and aiokafka (topic admin, `gateway tail`,
`gateway replay`) spell the same settings differently; both are built here from `[kafka]`, so
every client of the gateway connects the same way. With PLAINTEXT (the default, and the embedded
broker's) nothing is added. The SASL password is read from the environment variable the settings
name, when a client is built: it is in no settings object, log line or error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aiokafka.helpers import create_ssl_context

from gateway.settings import KafkaSettings

# The same SASL settings under each library's names.
_LIBRDKAFKA_SASL = {
    "mechanism": "sasl.mechanism",
    "username": "sasl.username",
    "password": "sasl.password",
}
_AIOKAFKA_SASL = {
    "mechanism": "sasl_mechanism",
    "username": "sasl_plain_username",
    "password": "sasl_plain_password",
}


def librdkafka_options(kafka: KafkaSettings, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """librdkafka configuration properties for `kafka`'s security settings."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options = {"security.protocol": kafka.security_protocol, **_sasl(kafka, env, _LIBRDKAFKA_SASL)}
    files = {
        "ssl.ca.location": kafka.ssl_ca_file,
        "ssl.certificate.location": kafka.ssl_cert_file,
        "ssl.key.location": kafka.ssl_key_file,
    }
    options.update({name: path for name, path in files.items() if path})
    return options


def aiokafka_options(kafka: KafkaSettings, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (consumer or admin) for `kafka`'s security."""
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {
        "security_protocol": kafka.security_protocol,
        **_sasl(kafka, env, _AIOKAFKA_SASL),
    }
    if kafka.security_protocol.endswith("SSL"):
        # The system's CAs unless a bundle is named; host names are checked either way.
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_ca_file or None,
            certfile=kafka.ssl_cert_file or None,
            keyfile=kafka.ssl_key_file or None,
        )
    return options


def _sasl(kafka: KafkaSettings, env: Mapping[str, str], names: dict[str, str]) -> dict[str, str]:
    if not kafka.security_protocol.startswith("SASL_"):
        return {}
    password = env.get(kafka.sasl_password_env, "")
    values = {
        "mechanism": kafka.sasl_mechanism,
        "username": kafka.sasl_username,
        "password": password,
    }
    return {names[key]: value for key, value in values.items()}
