"""One settings object, read once at start-up from a TOML file plus `GATEWAY_*` overrides.

Every scalar setting `[section] key` can be overridden by the variable `GATEWAY_<SECTION>_<KEY>`
(e.g. `GATEWAY_KAFKA_BOOTSTRAP_SERVERS`). A missing file, an unknown key, a `GATEWAY_*` variable
that names no setting (a typo would otherwise be ignored in silence), a value of the wrong type
or a secret whose variable is unset fails start-up with a message naming the setting.

The sections here are the gateway's own; each vendor package adds its section (its dataclass, its
checks, what its credentials must hold) as a `SettingsSection` on its `Vendor`, found through the
registry: `settings.section(TheVendorSettings)` reads it.
"""

from __future__ import annotations

import base64
import difflib
import hmac
import os
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, Union, get_args, get_origin, get_type_hints
from urllib.parse import urlsplit

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"
CONFIG_ENV = "GATEWAY_CONFIG"

S = TypeVar("S")


@dataclass(frozen=True)
class ServerSettings:
    """The HTTP listener and what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8080
    # The operational endpoints (/healthz, /readyz, /metrics, /openapi.json) listen here, on
    # `host`, and not on `port`: the public port, where an ingress sends the internet, answers
    # vendor routes only (metrics carry tenant names). 0: no admin port, everything on `port`.
    admin_port: int = 8081
    workers: int = 1
    # 4 MiB: several times the largest batches real senders post (a few hundred KB).
    max_body_bytes: int = 4 * 1024 * 1024
    # Where the gateway keeps local state (SQLite files): spool, read models, pending downloads.
    state_dir: str = "var"
    # Requests worked on at once per process; past it, 503 + Retry-After (bounds memory: each
    # holds up to max_body_bytes), never an unbounded queue. Requests whose credential only
    # their body proves count here once it is proven (until then, in the pool below).
    max_in_flight: int = 512
    # Requests whose credential only the body can prove (signatures over the body, Standard
    # Webhooks, an access_token in a form), while it is read and checked: a pool of their own, so
    # that unauthenticated clients cannot take the slots of authenticated ones. Past it, 503 +
    # Retry-After; past the share of one client address, 429 + Retry-After.
    max_unverified_in_flight: int = 64
    max_unverified_per_client: int = 16
    # How long a request's body may take to arrive, in all (not between bytes: a byte every few
    # seconds must not hold a slot for ever); past it, 408 in the vendor's format and close.
    # 4 MiB (max_body_bytes) in 30 s needs a little over 1 Mbit/s.
    body_timeout_seconds: float = 30.0
    # How long the request line and headers may take, from the connection's start or the
    # request's first byte; past it, 408 and close.
    header_timeout_seconds: float = 10.0
    # The request line and headers together, and the number of header fields; past either,
    # 431 and close. Real senders' heads are well under 8 KiB and 30 fields.
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted: addresses or networks
    # ("10.0.0.0/8"), "*" for any. Empty (the default): none, the TCP peer is the client; what
    # a client writes in those headers is ignored (rate limits and logs use the peer).
    forwarded_allow_ips: tuple[str, ...] = ()
    # The URL senders reach the gateway at ("https://gateway.example.edu", a path prefix allowed),
    # for answers that hold absolute links (pagination). "" = not known: links name the
    # configured `host` only when the request did too, else they are relative (never the Host a
    # request claims, which its sender chooses). Set it behind a reverse proxy.
    public_url: str = ""


@dataclass(frozen=True)
class KafkaSettings:
    """The Kafka cluster, the topics and the producer's delivery settings."""

    bootstrap_servers: str = "127.0.0.1:9092"
    canonical_topic: str = "edu.events.v1"
    deadletter_topic: str = "edu.events.deadletter.v1"
    client_id: str = "assessment-gateway"
    # Production Kafka supports idempotent producers; the embedded dev broker does not.
    enable_idempotence: bool = True
    compression: str = "zstd"
    linger_ms: int = 5
    max_batch_bytes: int = 1024 * 1024
    # The largest record the cluster takes. 0: read at start-up from the topics'
    # `max.message.bytes` (the smaller of the two), or 1 MiB (Kafka's default) where that cannot
    # be read. A record over it is never sent: it is dead-lettered, shrunk to fit if need be.
    max_record_bytes: int = 0
    # How long a request waits for the acks of its records before it is answered 503.
    publish_timeout_seconds: float = 10.0
    create_topics: bool = True
    topic_partitions: int = 6
    topic_replication_factor: int = 3
    # How the gateway's Kafka clients connect (gateway/kafka/security.py): managed clusters want
    # SASL_SSL. The password is read from the variable named here, never from this file.
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str = ""
    sasl_password_env: str = "KAFKA_SASL_PASSWORD"  # noqa: S105  # a variable's name
    # PEM files: the CA bundle brokers' certificates are checked against (default: the system's),
    # and a client certificate with its unencrypted key for clusters that authenticate by TLS.
    ssl_ca_file: str = ""
    ssl_cert_file: str = ""
    ssl_key_file: str = ""


@dataclass(frozen=True)
class DedupeSettings:
    """How long a published event is remembered, so that a re-send makes no second record."""

    # 72 h: the longest a sender is known to keep redelivering (docs/vendors/); re-sends within
    # it make no second record.
    window_seconds: float = 72 * 3600.0
    max_entries: int = 1_000_000


@dataclass(frozen=True)
class SpoolSettings:
    """Store-and-forward: where records go when Kafka does not acknowledge in time."""

    enabled: bool = True
    # How long a request waits for Kafka's acks before its records are spooled instead.
    # Short: a sender's own timeout (10 s for some) must not be reached first.
    ack_deadline_seconds: float = 2.0
    # Past this, the gateway answers 503 + Retry-After instead of growing without limit.
    max_bytes: int = 1024 * 1024 * 1024
    # Records forwarded to Kafka per batch when draining.
    drain_batch: int = 500


@dataclass(frozen=True)
class LogSettings:
    """Structured logging."""

    level: str = "info"
    format: str = "json"


@dataclass(frozen=True)
class TracingSettings:
    """OpenTelemetry tracing (needs the `tracing` extra); off by default."""

    enabled: bool = False
    # OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces. "" = the exporter's own default
    # (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else http://localhost:4318/v1/traces); its headers
    # (credentials) come from OTEL_EXPORTER_OTLP_HEADERS, never from this file.
    endpoint: str = ""
    service_name: str = "assessment-gateway"


@dataclass(frozen=True)
class CanonicalSettings:
    """What goes into canonical records beyond the vendor-neutral fields."""

    include_original: bool = False


@dataclass(frozen=True)
class RateLimitSettings:
    """Token buckets per tenant and vendor, and per client IP for failed authentication."""

    # Off by default: a gateway behind a load balancer usually has its limits there.
    enabled: bool = False
    # Requests per second each (tenant, vendor) may send on average, and how many at once.
    rate_per_second: float = 100.0
    burst: int = 200
    # Failed authentications per second a client IP may make; past its burst, every request of
    # that IP gets 429 until the bucket refills (slows credential guessing, spares the HMACs).
    failed_auth_rate_per_second: float = 1.0
    failed_auth_burst: int = 20
    # Bound on the buckets remembered (least recently used forgotten first).
    max_buckets: int = 100_000


@dataclass(frozen=True)
class Credential:
    """A secret that authenticates one vendor's requests for one tenant.

    For bearer-token vendors `secret` is the token; `principal` is for schemes that name the sender.
    """

    vendor: str
    secret: str
    principal: str = ""
    # Every active secret, `secret` first: while a secret is rotated, the old and the new one
    # both authenticate (empty: `secret` alone).
    secrets: tuple[str, ...] = ()
    # "" = the vendor's own scheme; "standard-webhooks" = Standard Webhooks signatures
    # (`webhook-id`, `webhook-timestamp`, `webhook-signature`) with `whsec_` secrets.
    scheme: str = ""
    # Standard Webhooks only: how far `webhook-timestamp` may be from the gateway's clock.
    tolerance_seconds: float = 300.0
    # The sender's accounts this credential's tenant owns, for schemes where a signed payload
    # names its account and the signing key is the sender's, not the tenant's (a vendor's
    # doc page says what an account is there): such a payload belongs to the tenant listing it.
    accounts: tuple[str, ...] = ()

    @property
    def active_secrets(self) -> tuple[str, ...]:
        """Every secret that authenticates this credential now."""
        return self.secrets or (self.secret,)


PRIVACY_POLICIES: tuple[str, ...] = ("keep", "pseudonymize", "drop")


@dataclass(frozen=True)
class PrivacySettings:
    """The default PII policy of tenants that set none (gateway/privacy.py, docs/security.md)."""

    # drop: the only policy that is safe without a key to keep secret (docs/security.md).
    policy: str = "drop"
    # The pseudonymization key: the name of a variable holding it, or a file holding it. Each
    # tenant's key is derived from it (HMAC with the tenant's name), unless it has its own.
    secret_env: str = ""
    secret_file: str = ""


@dataclass(frozen=True)
class TenantPrivacy:
    """A tenant's effective PII policy: `keep`, `pseudonymize` (with `key`) or `drop`."""

    policy: str = "drop"
    key: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Tenant:
    """An institution whose events flow through the gateway; a credential maps to one tenant."""

    name: str
    credentials: tuple[Credential, ...] = ()
    privacy: TenantPrivacy = field(default_factory=TenantPrivacy)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway reads from its configuration."""

    server: ServerSettings = field(default_factory=ServerSettings)
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    dedupe: DedupeSettings = field(default_factory=DedupeSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    logging: LogSettings = field(default_factory=LogSettings)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    canonical: CanonicalSettings = field(default_factory=CanonicalSettings)
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    tenants: tuple[Tenant, ...] = ()
    # The vendors' sections, one instance of each registered section's dataclass: read one with
    # `section`, which types it.
    vendor_settings: tuple[Any, ...] = ()

    def section(self, kind: type[S]) -> S:
        """A vendor's section by its dataclass: as configured, or its defaults where it was not
        read (settings built in code, `Settings()`)."""
        for value in self.vendor_settings:
            if isinstance(value, kind):
                return value
        return kind()

    def with_section(self, value: object) -> Settings:
        """These settings with `value` as the section of its dataclass."""
        kept = tuple(v for v in self.vendor_settings if type(v) is not type(value))
        return replace(self, vendor_settings=(*kept, value))


@dataclass(frozen=True, slots=True)
class SettingsSection(Generic[S]):
    """A `[name]` table of the configuration: its frozen dataclass `kind` (scalars and tuples of
    strings, each with a default; every one also read from `GATEWAY_<NAME>_<FIELD>`) and its
    checks. A vendor's section may also check its credentials: `check_credential` each one in
    the vendor's own scheme as it is read (`where` names it in errors), `check_credentials` all
    of them together once every tenant is read ((tenant, credential) pairs)."""

    name: str
    kind: type[S]
    positive: frozenset[str] = frozenset()  # fields that must be > 0
    not_negative: frozenset[str] = frozenset()  # fields where 0 turns a check off
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    check_credential: Callable[[str, Credential], None] | None = None
    check_credentials: Callable[[Sequence[tuple[str, Credential]]], None] | None = None


_SHARED: Final[tuple[SettingsSection[Any], ...]] = (
    SettingsSection(
        "server",
        ServerSettings,
        positive=frozenset(
            {
                "port",
                "workers",
                "max_body_bytes",
                "max_in_flight",
                "max_unverified_in_flight",
                "max_unverified_per_client",
                "body_timeout_seconds",
                "header_timeout_seconds",
                "max_header_bytes",
                "max_headers",
            }
        ),
    ),
    SettingsSection(
        "kafka",
        KafkaSettings,
        positive=frozenset(
            {
                "max_batch_bytes",
                "publish_timeout_seconds",
                "topic_partitions",
                "topic_replication_factor",
            }
        ),
        choices={
            "compression": ("none", "gzip", "lz4", "zstd"),
            "security_protocol": ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
            "sasl_mechanism": ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        },
    ),
    SettingsSection("dedupe", DedupeSettings, positive=frozenset({"max_entries"})),
    SettingsSection(
        "spool",
        SpoolSettings,
        positive=frozenset({"ack_deadline_seconds", "max_bytes", "drain_batch"}),
    ),
    SettingsSection(
        "logging",
        LogSettings,
        choices={
            "level": ("debug", "info", "warning", "error"),
            "format": ("json", "console"),
        },
    ),
    SettingsSection("tracing", TracingSettings),
    SettingsSection("canonical", CanonicalSettings),
    SettingsSection(
        "rate_limit",
        RateLimitSettings,
        positive=frozenset(
            {
                "rate_per_second",
                "burst",
                "failed_auth_rate_per_second",
                "failed_auth_burst",
                "max_buckets",
            }
        ),
    ),
    SettingsSection("privacy", PrivacySettings, choices={"policy": PRIVACY_POLICIES}),
)

# librdkafka's ceiling for `message.max.bytes`.
_MAX_RECORD_BYTES = 1_000_000_000


def sections() -> dict[str, SettingsSection[Any]]:
    """Every section a configuration may have, by name: the gateway's own, then each registered
    vendor's (raises ConfigError for a vendor's section named like another)."""
    return _all_sections(_vendor_sections())


def _all_sections(
    by_vendor: Mapping[str, SettingsSection[Any]],
) -> dict[str, SettingsSection[Any]]:
    found = {section.name: section for section in _SHARED}
    for section in by_vendor.values():
        if section.name in found or section.name == "tenants":
            raise ConfigError(f"two settings sections are named [{section.name}]")
        found[section.name] = section
    return found


def _vendor_sections() -> dict[str, SettingsSection[Any]]:
    """The registered vendors' sections, by vendor name."""
    # Imported on call: the registry imports the vendor packages, which import this module.
    from gateway.vendors import registry  # noqa: PLC0415

    return {name: v.settings for name, v in registry().items() if v.settings is not None}


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (`path`, else `$GATEWAY_CONFIG`, else defaults) and apply overrides."""
    env = os.environ if environ is None else environ
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    by_vendor = _vendor_sections()
    known = _all_sections(by_vendor)
    unknown = set(raw) - set(known) - {"tenants"}
    if unknown:
        raise ConfigError(f"unknown configuration section(s): {', '.join(sorted(unknown))}")
    built = {
        name: _build(section, _table(raw.get(name, {}), name), env)
        for name, section in known.items()
    }
    _check_variables(env, raw, known, built)
    shared = {section.name: built.pop(section.name) for section in _SHARED}
    _check_kafka_security(shared["kafka"], env)
    tenants = _tenants(raw.get("tenants", []), env, shared["privacy"], by_vendor)
    return Settings(tenants=tenants, vendor_settings=tuple(built.values()), **shared)


# Variables with the gateway's prefix that are not settings: the configuration file's name, and
# CGI's GATEWAY_INTERFACE, which web servers set for the programs they run.
_NOT_SETTINGS = frozenset({CONFIG_ENV, "GATEWAY_INTERFACE"})


def _check_variables(
    env: Mapping[str, str],
    raw: dict[str, Any],
    known: Mapping[str, SettingsSection[Any]],
    built: Mapping[str, Any],
) -> None:
    """Refuse a `GATEWAY_*` variable that names no setting, as an unknown key of the file is: a
    misspelt override would be ignored and the default used, without a word. The variables
    the configuration itself names (`*_env`: where its secrets are) may have the prefix too.
    Only names are said, never values (they may be secrets)."""
    settings = {
        f"{ENV_PREFIX}{name}_{f.name}".upper(): f"{name}.{f.name}"
        for name, section in known.items()
        for f in fields(section.kind)
    }
    named = {
        getattr(value, f.name)
        for value in built.values()
        for f in fields(value)
        if f.name.endswith("_env")
    }
    allowed = {*settings, *named, *_named_variables(raw), *_NOT_SETTINGS}
    unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in allowed)
    if not unknown:
        return
    said = []
    for name in unknown:
        close = difflib.get_close_matches(name, settings, n=1)
        hint = f" (did you mean {close[0]}, the setting {settings[close[0]]}?)" if close else ""
        said.append(name + hint)
    raise ConfigError(
        f"unknown variable(s): {'; '.join(said)}: a {ENV_PREFIX}* variable must name a setting"
    )


def _named_variables(value: Any) -> list[str]:
    """Every string the file gives a `*_env` key (a variable's name), at any depth."""
    if isinstance(value, list):
        return [name for item in value for name in _named_variables(item)]
    if not isinstance(value, dict):
        return []
    names = [v for k, v in value.items() if k.endswith("_env") and isinstance(v, str)]
    return names + [name for v in value.values() for name in _named_variables(v)]


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _build(section: SettingsSection[S], table: dict[str, Any], env: Mapping[str, str]) -> S:
    cls = section.kind
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]  # kind is always a dataclass
    unknown = set(table) - names
    if unknown:
        raise ConfigError(f"unknown setting(s) in [{section.name}]: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in names:
        key = f"{section.name}.{name}"
        variable = f"{ENV_PREFIX}{section.name}_{name}".upper()
        if variable in env:
            values[name] = _from_env(env[variable], hints[name], variable)
        elif name in table:
            values[name] = _checked(table[name], hints[name], key)
        else:
            continue
        _check_value(section, name, values[name])
    return cls(**values)


def _checked(value: Any, hint: Any, key: str) -> Any:
    if get_origin(hint) is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} must be an array of strings, not {value!r}")
        return tuple(value)
    expected = _scalar_type(hint)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, not {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key} must be of type {expected.__name__}, not {value!r}")
    return value


def _from_env(text: str, hint: Any, variable: str) -> Any:
    if get_origin(hint) is tuple:  # a list setting: comma-separated in a variable
        return tuple(part.strip() for part in text.split(",") if part.strip())
    expected = _scalar_type(hint)
    if expected is bool:
        lowered = text.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{variable} must be true or false, not {text!r}")
    try:
        return expected(text)
    except ValueError:
        raise ConfigError(f"{variable} must be of type {expected.__name__}, not {text!r}") from None


def _scalar_type(hint: Any) -> type[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        return next(a for a in get_args(hint) if a is not type(None))  # type: ignore[no-any-return]
    return hint  # type: ignore[no-any-return]


def _check_value(section: SettingsSection[Any], name: str, value: Any) -> None:
    key = f"{section.name}.{name}"
    choices = section.choices.get(name)
    if choices is not None and value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, not {value!r}")
    if name in section.positive and value <= 0:
        raise ConfigError(f"{key} must be positive, not {value!r}")
    if name in section.not_negative and value < 0:
        raise ConfigError(f"{key} must be 0 (not checked) or positive, not {value!r}")
    if key == "server.public_url" and value:
        _check_public_url(key, value)
    if key == "kafka.max_record_bytes" and not (value == 0 or 1024 <= value <= _MAX_RECORD_BYTES):
        raise ConfigError(f"{key} must be 0 (read from the cluster) or 1024..{_MAX_RECORD_BYTES}")
    if isinstance(value, str) and not value and key.startswith("kafka."):
        raise ConfigError(f"{key} must not be empty")


def _check_public_url(key: str, value: str) -> None:
    """An absolute http(s) URL naming a host, without credentials, query or fragment: links are
    built by appending `/api/v1/...` to it."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises ValueError for a port that is no port
    except ValueError:
        raise ConfigError(f"{key} is not a URL: {value!r}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.password is not None
        or parts.query
        or parts.fragment
        or "?" in value
        or "#" in value
    ):
        raise ConfigError(
            f"{key} must be an http(s) URL such as https://gateway.example.edu, "
            f"without credentials, query or fragment, not {value!r}"
        )


def _check_kafka_security(kafka: KafkaSettings, env: Mapping[str, str]) -> None:
    """Refuse at start-up what would only fail at the first connection: SASL without its
    credentials, TLS files that are not there, a certificate without its key."""
    if kafka.security_protocol.startswith("SASL_"):
        if not kafka.sasl_username:
            raise ConfigError(f"kafka.sasl_username is required with {kafka.security_protocol}")
        if not env.get(kafka.sasl_password_env):
            raise ConfigError(
                f"the Kafka SASL password is read from ${kafka.sasl_password_env} "
                "(kafka.sasl_password_env), which is not set"
            )
    files = {
        "kafka.ssl_ca_file": kafka.ssl_ca_file,
        "kafka.ssl_cert_file": kafka.ssl_cert_file,
        "kafka.ssl_key_file": kafka.ssl_key_file,
    }
    for key, path in files.items():
        if path and not kafka.security_protocol.endswith("SSL"):
            raise ConfigError(f"{key} is set but kafka.security_protocol is not SSL or SASL_SSL")
        if path and not Path(path).is_file():
            raise ConfigError(f"{key}: {path} is not a file")
    if bool(kafka.ssl_cert_file) != bool(kafka.ssl_key_file):
        raise ConfigError("kafka.ssl_cert_file and kafka.ssl_key_file go together")


def _tenants(
    value: Any,
    env: Mapping[str, str],
    privacy: PrivacySettings | None = None,
    by_vendor: Mapping[str, SettingsSection[Any]] | None = None,
) -> tuple[Tenant, ...]:
    if not isinstance(value, list):
        raise ConfigError("tenants must be an array of tables ([[tenants]])")
    checks = by_vendor or {}
    tenants: list[Tenant] = []
    for i, entry in enumerate(value):
        table = _table(entry, f"tenants[{i}]")
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"tenants[{i}].name is missing")
        unknown = set(table) - {"name", "credentials", "privacy"}
        if unknown:
            raise ConfigError(
                f"unknown setting(s) in tenant {name!r}: {', '.join(sorted(unknown))}"
            )
        creds = table.get("credentials", [])
        if not isinstance(creds, list):
            raise ConfigError(f"tenant {name!r}: credentials must be an array of tables")
        credentials = tuple(
            _credential(
                _table(c, f"tenant {name!r} credentials[{j}]"), f"tenant {name!r}", j, env, checks
            )
            for j, c in enumerate(creds)
        )
        own = _table(table.get("privacy", {}), f"tenant {name!r} privacy")
        effective = _tenant_privacy(name, own, privacy or PrivacySettings(), env)
        tenants.append(Tenant(name=name, credentials=credentials, privacy=effective))
    names = [t.name for t in tenants]
    if len(set(names)) != len(names):
        raise ConfigError("tenant names must be unique")
    _check_credentials_unique(tenants)
    for vendor, section in checks.items():
        if section.check_credentials is not None:
            section.check_credentials(
                [
                    (tenant.name, credential)
                    for tenant in tenants
                    for credential in tenant.credentials
                    if credential.vendor == vendor and not credential.scheme
                ]
            )
    return tuple(tenants)


_SECRET_SOURCES: tuple[str, ...] = ("secret", "secrets", "secret_env", "secrets_env", "secret_file")
_SCHEMES: tuple[str, ...] = ("", "standard-webhooks")


def _credential(
    table: dict[str, Any],
    owner: str,
    index: int,
    env: Mapping[str, str],
    checks: Mapping[str, SettingsSection[Any]],
) -> Credential:
    where = f"{owner} credentials[{index}]"
    known = {"vendor", "principal", "scheme", "tolerance_seconds", "accounts", *_SECRET_SOURCES}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}")
    vendor = table.get("vendor")
    if not isinstance(vendor, str) or not vendor:
        raise ConfigError(f"{where}.vendor is missing")
    secrets = _credential_secrets(table, where, env)
    principal = table.get("principal", "")
    if not isinstance(principal, str):
        raise ConfigError(f"{where}.principal must be a string")
    scheme = table.get("scheme", "")
    if scheme not in _SCHEMES:
        raise ConfigError(f'{where}.scheme must be "standard-webhooks" or absent, not {scheme!r}')
    tolerance = table.get("tolerance_seconds", 300.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
        raise ConfigError(f"{where}.tolerance_seconds must be a positive number")
    accounts = table.get("accounts", [])
    if not isinstance(accounts, list) or not all(isinstance(a, str) and a for a in accounts):
        raise ConfigError(f"{where}.accounts must be a list of non-empty strings")
    credential = Credential(
        vendor=vendor,
        secret=secrets[0],
        principal=principal,
        secrets=secrets,
        scheme=scheme,
        tolerance_seconds=float(tolerance),
        accounts=tuple(accounts),
    )
    # What the vendor's own scheme needs of a credential (a key length, a principal): refused
    # at start-up rather than a 401 for every delivery.
    check = checks[vendor].check_credential if vendor in checks else None
    if scheme == "standard-webhooks":
        for secret in secrets:
            _check_standard_webhooks_secret(where, secret)
    elif check is not None:
        check(where, credential)
    return credential


def _credential_secrets(
    table: dict[str, Any], where: str, env: Mapping[str, str]
) -> tuple[str, ...]:
    """The active secrets of a credential, from exactly one of its secret sources."""
    given = [name for name in _SECRET_SOURCES if name in table]
    if len(given) > 1:
        raise ConfigError(f"{where}: give one secret source, not {' and '.join(given)}")
    if not given:
        raise ConfigError(
            f"{where}: secret (or secret_env) is missing (or secrets, secrets_env, secret_file)"
        )
    source = given[0]
    value = table[source]
    if source == "secrets":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}.secrets must be an array of non-empty strings")
        found = list(value)
    elif source == "secret_file":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.secret_file must be a file path")
        try:
            text = Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.__class__.__name__
            raise ConfigError(f"{where}: secret_file {value!r} cannot be read ({reason})") from None
        # One secret per line; surrounding whitespace is from editors and mounts, not the secret.
        found = [line.strip() for line in text.splitlines() if line.strip()]
    elif source in ("secret_env", "secrets_env"):
        text = env.get(value, "") if isinstance(value, str) else ""
        if not text:
            raise ConfigError(f"{where}: environment variable {value!r} ({source}) is not set")
        # secrets_env holds several, comma-separated; secret_env one (a secret may hold commas).
        several = source == "secrets_env"
        found = [p.strip() for p in text.split(",") if p.strip()] if several else [text]
    else:
        if not isinstance(value, str):
            raise ConfigError(f"{where}.secret must be a string")
        found = [value] if value else []
    if not found:
        raise ConfigError(f"{where}: {source} holds no secret")
    return tuple(dict.fromkeys(found))


def _check_standard_webhooks_secret(where: str, secret: str) -> None:
    # The key is the base64 after `whsec_`: a secret that is not would never verify, and every
    # delivery would get a 401 instead of the gateway refusing to start.
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError:
        key = b""
    if not key:
        raise ConfigError(f"{where}: a standard-webhooks secret is whsec_ and base64 (the key)")


def _check_credentials_unique(tenants: list[Tenant]) -> None:
    # A credential that two tenants share would make the tenant of a request ambiguous.
    seen: dict[tuple[str, str, str], str] = {}
    for tenant in tenants:
        for cred in tenant.credentials:
            for secret in cred.active_secrets:
                key = (cred.vendor, cred.principal, secret)
                if key in seen and seen[key] != tenant.name:
                    raise ConfigError(
                        f"a {cred.vendor} credential of tenant {tenant.name!r} is also "
                        f"tenant {seen[key]!r}'s: each credential must map to one tenant"
                    )
                seen[key] = tenant.name


_MIN_PRIVACY_KEY_BYTES = 16


def _tenant_privacy(
    tenant: str, table: dict[str, Any], default: PrivacySettings, env: Mapping[str, str]
) -> TenantPrivacy:
    """A tenant's `[tenants.privacy]` (policy, secret_env | secret_file) over the default."""
    where = f"tenant {tenant!r} privacy"
    unknown = set(table) - {"policy", "secret_env", "secret_file"}
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}")
    policy = table.get("policy", default.policy)
    if policy not in PRIVACY_POLICIES:
        raise ConfigError(f"{where}.policy must be one of {', '.join(PRIVACY_POLICIES)}")
    if policy != "pseudonymize":
        return TenantPrivacy(policy)
    if "secret_env" in table or "secret_file" in table:
        return TenantPrivacy(policy, _privacy_key(table, where, env))
    if not (default.secret_env or default.secret_file):
        raise ConfigError(
            f"{where}: pseudonymize needs a key: secret_env or secret_file in "
            "[tenants.privacy] or in [privacy]"
        )
    shared = _privacy_key(
        {"secret_env": default.secret_env, "secret_file": default.secret_file}, "privacy", env
    )
    # One key per tenant, so that one learner's pseudonyms differ between tenants: records of
    # two institutions cannot be linked through them.
    derived = hmac.new(shared, b"assessment-gateway pseudonym key\0" + tenant.encode(), "sha256")
    return TenantPrivacy(policy, derived.digest())


def _privacy_key(table: Mapping[str, Any], where: str, env: Mapping[str, str]) -> bytes:
    variable, path = table.get("secret_env") or "", table.get("secret_file") or ""
    if variable and path:
        raise ConfigError(f"{where}: give secret_env or secret_file, not both")
    if variable:
        key = env.get(variable, "") if isinstance(variable, str) else ""
        if not key:
            raise ConfigError(f"{where}: environment variable {variable!r} (secret_env) is not set")
    else:
        if not isinstance(path, str):
            raise ConfigError(f"{where}.secret_file must be a file path")
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.__class__.__name__
            raise ConfigError(f"{where}: secret_file {path!r} cannot be read ({reason})") from None
    raw = key.encode("utf-8")
    if len(raw) < _MIN_PRIVACY_KEY_BYTES:
        # Emails and names are guessable: a short key would let anyone rebuild the pseudonyms.
        raise ConfigError(
            f"{where}: the pseudonymization key must be at least {_MIN_PRIVACY_KEY_BYTES} bytes"
        )
    return raw
