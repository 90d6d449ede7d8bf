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


def librdkafka_options(kafka: KafkaSettings, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """librdkafka configuration properties for `kafka`'s security settings."""
    options: dict[str, str] = {}
    if kafka.security_protocol == "PLAINTEXT":
        return options
    options["security.protocol"] = kafka.security_protocol
    if kafka.security_protocol.startswith("SASL_"):
        options["sasl.mechanism"] = kafka.sasl_mechanism
        options["sasl.username"] = kafka.sasl_username
        options["sasl.password"] = env.get(kafka.sasl_password_env, "")
    files = {
        "ssl.ca.location": kafka.ssl_ca_file,
        "ssl.certificate.location": kafka.ssl_cert_file,
        "ssl.key.location": kafka.ssl_key_file,
    }
    options.update({name: path for name, path in files.items() if path})
    return options


def aiokafka_options(kafka: KafkaSettings, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Keyword arguments for an aiokafka client (consumer or admin) for `kafka`'s security."""
    options: dict[str, Any] = {}
    if kafka.security_protocol == "PLAINTEXT":
        return options
    options["security_protocol"] = kafka.security_protocol
    if kafka.security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = env.get(kafka.sasl_password_env, "")
    if kafka.security_protocol.endswith("SSL"):
        # The system's CAs unless a bundle is named; host names are checked either way.
        options["ssl_context"] = create_ssl_context(
            cafile=kafka.ssl_ca_file or None,
            certfile=kafka.ssl_cert_file or None,
            keyfile=kafka.ssl_key_file or None,
        )
    return options
