"""The gateway's errors: one root class, each carrying its HTTP status and whether to retry.

Errors are mapped to HTTP in one place (`gateway.app`), in the vendor's own error format.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One problem at one place of a payload: a JSON pointer and a human message."""

    path: str
    message: str


class GatewayError(Exception):
    """Raised when a request cannot be taken; the root of every error the gateway answers."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class ConfigError(GatewayError):
    """Raised when the configuration is missing or invalid at start-up."""

    code = "invalid_configuration"


class Unauthorized(GatewayError):
    """Raised when a request carries no credential, or one that no tenant owns."""

    status = 401
    code = "unauthorized"


class NotFound(GatewayError):
    """Raised when a request names a resource that does not exist."""

    status = 404
    code = "not_found"


class PayloadTooLarge(GatewayError):
    """Raised when a body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    """Raised when a body comes in a content type the vendor's route does not take."""

    status = 415
    code = "unsupported_media_type"


class MalformedPayload(GatewayError):
    """Raised when a body cannot be decoded or lacks the envelope the vendor's contract requires."""

    status = 400
    code = "malformed_payload"


class UnsupportedVersion(GatewayError):
    """Raised when a well-formed payload declares a protocol version the gateway does not speak."""

    status = 422
    code = "unsupported_version"


class Overloaded(GatewayError):
    """Raised when the gateway already works on as many requests as it is configured to."""

    status = 503
    code = "overloaded"
    retryable = True


class BrokerUnavailable(GatewayError):
    """Raised when Kafka does not acknowledge a request's records in time; senders may retry."""

    status = 503
    code = "broker_unavailable"
    retryable = True


@dataclass(frozen=True)
class Rejection:
    """Why one event of an accepted request goes to the dead-letter topic, not the canonical one.

    `code` is machine-readable (`schema_violation`, `unmappable`, ...), `message` is for humans.
    """

    code: str
    message: str
    errors: tuple[FieldError, ...] = field(default=())


class NormalizeError(Exception):
    """Raised by a normalizer when a schema-valid event cannot be mapped to a canonical record."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class RequestTimeout(GatewayError):
    """Raised when a request's body does not arrive within `server.body_timeout_seconds`."""

    status = 408
    code = "request_timeout"
