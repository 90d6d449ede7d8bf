"""`[pearson]`: the window an AUTHORIZATION timestamp must fall in, and what a Pearson credential
must hold (its principal, a secret that is an AES key), checked when the configuration is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from gateway.errors import ConfigError
from gateway.settings import Credential, SettingsSection


@dataclass(frozen=True)
class PearsonSettings:
    """Pearson LearningStudio eventing."""

    # Seconds an AUTHORIZATION timestamp may be old; 0 = not checked. Pearson redelivers a message
    # for up to 72 h, and nothing Pearson published says a redelivery is signed again (its own
    # verifier, EventingClient.verifyAuthenticity, never looks at the time): a redelivery may
    # carry the first delivery's timestamp. So 72 h, plus an hour for queueing before the first
    # attempt and for clocks. Older ones are refused: a captured delivery is not good forever.
    max_age_seconds: float = 73 * 3600.0
    # Seconds an AUTHORIZATION timestamp may be ahead of the gateway's clock (Pearson's clock
    # running fast); 0 = not checked. Five minutes, the tolerance Pearson's own API allows.
    max_future_seconds: float = 300.0


def check_credential(where: str, credential: Credential) -> None:
    """Each of a credential's secrets is an AES key, and the credential names its principal."""
    for secret in credential.active_secrets:
        _check_secret(where, credential.principal, secret)


def _check_secret(where: str, principal: str, secret: str) -> None:
    # Pearson signs with AES-CMAC keyed by the secret's raw bytes: any other length could never
    # verify, and every delivery would get a 401 (and be redelivered for 72 h) instead of the
    # gateway refusing to start. The principal is how a delivery names its credential.
    if not principal:
        raise ConfigError(f"{where}: a pearson credential needs its principal (the principal id)")
    if len(secret.encode("utf-8")) not in (16, 24, 32):
        raise ConfigError(
            f"{where}: a pearson secret is an AES key: 16, 24 or 32 bytes (UTF-8), "
            f"not {len(secret.encode('utf-8'))}"
        )


def check_principals_unique(credentials: Sequence[tuple[str, Credential]]) -> None:
    """Each principal has one credential, across every tenant."""
    # A delivery is matched to its secret by principal alone: a second credential with the same
    # principal would silently never match.
    seen: set[str] = set()
    for tenant, credential in credentials:
        if credential.principal in seen:
            raise ConfigError(
                f"pearson principal {credential.principal!r} is configured twice "
                f"(tenant {tenant!r}): each principal must have one secret"
            )
        seen.add(credential.principal)


SECTION: Final = SettingsSection(
    "pearson",
    PearsonSettings,
    # Windows where 0 turns the check off: a negative one would refuse every delivery.
    not_negative=frozenset({"max_age_seconds", "max_future_seconds"}),
    check_credential=check_credential,
    check_credentials=check_principals_unique,
)
