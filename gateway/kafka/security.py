"""How the gateway's Kafka clients connect: the brokers, TLS and SASL, for both client libraries.

librdkafka (the producer, the topic followers of read models) and aiokafka (topic admin,
`gateway tail`, `gateway replay`) spell the same settings differently; every client is given its
connection by one of the two functions here, so none can reach the brokers any other way. With
PLAINTEXT (the default, and the embedded broker's) only the brokers are named. The SASL password
is read from the environment variable the settings name, when a client is built: it is in no
settings object, log line or error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from aiokafka.helpers import create_ssl_context

from gateway.kafka.log import ClientLog
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


def librdkafka_connection(
    kafka: KafkaSettings, client_id: str, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """librdkafka configuration properties: brokers, client id, log hand-over and security."""
    options: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "logger": ClientLog(),
    }
    if kafka.security_protocol == "PLAINTEXT":
        return options
    options["security.protocol"] = kafka.security_protocol
    options.update(_sasl(kafka, env, _LIBRDKAFKA_SASL))
    files = {
        "ssl.ca.location": kafka.ssl_ca_file,
        "ssl.certificate.location": kafka.ssl_cert_file,
        "ssl.key.location": kafka.ssl_key_file,
    }
    options.update({name: path for name, path in files.items() if path})
    return options


def aiokafka_connection(
    kafka: KafkaSettings, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (consumer or admin): brokers and security."""
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap_servers}
    if kafka.security_protocol == "PLAINTEXT":
        return options
    options["security_protocol"] = kafka.security_protocol
    options.update(_sasl(kafka, env, _AIOKAFKA_SASL))
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
