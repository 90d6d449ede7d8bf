"""The gateway's errors, in three kinds that never mix.

1. **What a sender is answered with**: `GatewayError` and its subclasses, every one of them here,
   each carrying its HTTP status, its machine-readable `code` and whether to retry. They are
   turned into the vendor's reply, and the request's log line written, in one place
   (`gateway.boundary`): the vendors' routes, their extra routes and the router's own 404 and
   405 alike. Facts an answer needs in a header travel with the error (`RateLimited.retry_after`
   for `Retry-After`, `MethodNotAllowed.allow` for `Allow`); a vendor's `render_error` decides
   the rest of the answer's form. No vendor is named here: an error one vendor raises is defined
   by what it means (`InvalidParameter`), not by who raises it.
2. **What stops the gateway, or a command, before it serves anything**: `ConfigError`, a missing
   or invalid setting, a port taken, a file that cannot be read. Never an HTTP answer: the CLI
   prints its message on one line and exits 2.
3. **Signals between the gateway's own parts**, never answered as they are: the code that catches
   one answers with an error of the first kind or keeps the event as a dead letter. Here:
   `NormalizeError` (a normalizer's, which makes a dead letter) and `BodyCut` (a body reader's:
   the client hung up, answered as `MalformedPayload`). Beside the code that raises them:
   `InvalidJson` (gateway.limits: a body that is not JSON, which a vendor's decoder answers as
   `MalformedPayload`), `ProducerError` and `RecordsRefused` (gateway.kafka.producer: the
   publisher answers `BrokerUnavailable`, or dead-letters the refused records), and a vendor's own
   background or command errors, in its package.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One problem at one place of a payload: a JSON pointer and a human message."""

    path: str
    message: str


@dataclass(frozen=True)
class Rejection:
    """Why one event of an accepted request goes to the dead-letter topic, not the canonical one.

    `code` is machine-readable (`schema_violation`, `unmappable`, ...), `message` is for humans.
    """

    code: str
    message: str
    errors: tuple[FieldError, ...] = field(default=())


# --- start-up ------------------------------------------------------------------------------------


class ConfigError(Exception):
    """Raised when the gateway cannot start, or a command cannot run, as configured or asked: a
    missing or invalid setting, a port taken, a file that cannot be read. Not an HTTP error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- signals -------------------------------------------------------------------------------------


class NormalizeError(Exception):
    """Raised by a normalizer when a schema-valid event cannot be mapped to a canonical record
    (the event is dead-lettered as `unmappable`; the request is not refused)."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class BodyCut(Exception):
    """Raised by a request's body reader (gateway/app.py) when the client hangs up before the
    whole body arrived; the pipeline answers it as `MalformedPayload`."""


# --- answers -------------------------------------------------------------------------------------


class GatewayError(Exception):
    """Raised when a request cannot be taken; the root of every error the gateway answers."""

    status: int = 500
    code: str = "internal_error"
    retryable: bool = False

    def __init__(self, message: str, errors: tuple[FieldError, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class MalformedPayload(GatewayError):
    """Raised when a body cannot be decoded or lacks the envelope the vendor's contract requires."""

    status = 400
    code = "malformed_payload"


class RackParameterError(MalformedPayload):
    """Raised when the keys of a nested form conflict (`a=1&a[]=2`) or nest deeper than Rack,
    the Ruby form parser whose reading such senders rely on, allows."""


class UnsafePayload(GatewayError):
    """Raised when a body is over one of the safety limits (depth, members, duplicates, digits):
    unlike a malformed body it is not dead-lettered, nothing of it is kept (gateway.limits)."""

    status = 400
    code = "unsafe_payload"


class AmbiguousCredentials(GatewayError):
    """Raised when a request carries more than one different credential (RFC 6750 §3.1: more
    than one method, or a repeated parameter, is an `invalid_request`): which one counts would be
    a choice the sender cannot see, and other readers of the request may have taken another."""

    status = 400
    code = "ambiguous_credentials"


class InvalidParameter(GatewayError):
    """Raised when a query parameter of a GET cannot be what it names (a page beyond 64 bits)."""

    status = 400
    code = "invalid_parameter"


class Unauthorized(GatewayError):
    """Raised when a request carries no credential, or one that no tenant owns."""

    status = 401
    code = "unauthorized"


class SignatureRefused(Unauthorized):
    """A Standard Webhooks request refused: HTTP has no authentication scheme for it, so its
    401 names none (no `WWW-Authenticate`), whatever the vendor's own scheme is."""


class NotFound(GatewayError):
    """Raised when a request names a resource that does not exist (or a route nobody serves)."""

    status = 404
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """Raised when a route exists but not for the request's method; `allow` lists the methods
    it takes (the answer's `Allow` header)."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class RequestTimeout(GatewayError):
    """Raised when a request's body does not arrive within `server.body_timeout_seconds`."""

    status = 408
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    """Raised when a body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(GatewayError):
    """Raised when a body comes in a content type the vendor's route does not take."""

    status = 415
    code = "unsupported_media_type"


class UnsupportedVersion(GatewayError):
    """Raised when a well-formed payload declares a protocol version the gateway does not speak."""

    status = 422
    code = "unsupported_version"


class RateLimited(GatewayError):
    """Raised when a sender is over its rate limit (gateway.ratelimit), or a client address over
    its share of the requests being authenticated; answered 429 with `Retry-After`."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


class KeysUnavailable(GatewayError):
    """Raised when a signature cannot be checked because the signer's published keys could not
    be fetched (yet): the request may be good, so the sender is asked to retry (503)."""

    status = 503
    code = "keys_unavailable"
    retryable = True


class SpoolFull(GatewayError):
    """Raised when the spool has reached its size limit: the gateway stops accepting (503)."""

    status = 503
    code = "spool_full"
    retryable = True
