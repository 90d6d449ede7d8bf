"""Standard Webhooks (https://www.standardwebhooks.com) as a credential's scheme, checked against
the reference algorithm written out here with hmac and base64: the signed content is
`<webhook-id>.<webhook-timestamp>.<raw body>`, the signature `v1,<base64 HMAC-SHA256>` keyed with
the base64 after `whsec_`, several signatures space-separated, the timestamp within 5 minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.auth import Authenticator, Credentials
from gateway.errors import ConfigError, Unauthorized
from gateway.settings import Credential, Tenant, load_settings
from gateway.vendors import caliper
from gateway.vendors.inspera import VENDOR as INSPERA

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
KEY = b"the-signing-key-of-tenant-north!"
NEW_KEY = b"the-new-signing-key-after-rotate"
OTHER_KEY = b"the-signing-key-of-tenant-south!"
BODY = b'{"event":"confirm_final_grades","contextObjectId":35199862}'


def whsec(key: bytes) -> str:
    return "whsec_" + base64.b64encode(key).decode()


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The reference algorithm, independent of the gateway."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def headers(
    signature: str, webhook_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", ts: int = 0
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(ts or int(NOW.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


TENANTS = (
    Tenant(
        "north",
        (
            Credential(
                "inspera",
                whsec(KEY),
                secrets=(whsec(KEY), whsec(NEW_KEY)),
                scheme="standard-webhooks",
            ),
            Credential("inspera", "north-native-secret"),
        ),
    ),
    Tenant("south", (Credential("inspera", whsec(OTHER_KEY), scheme="standard-webhooks"),)),
)


def authenticate(presented: dict[str, str], body: bytes = BODY, vendor: str = "inspera") -> str:
    auth = Authenticator(TENANTS, clock=lambda: NOW)
    # `vendor`: Inspera's scheme under that name (one without Standard Webhooks credentials).
    tenant = auth.authenticate(
        replace(INSPERA, name=vendor), Credentials(presented, {}, "application/json", body)
    )
    assert isinstance(tenant, str)  # a scheme without fetched keys answers at once
    return tenant


def test_a_reference_signature_authenticates_its_tenant() -> None:
    ts = int(NOW.timestamp())
    assert authenticate(headers(sign(KEY, "msg_1", ts, BODY), "msg_1")) == "north"
    assert authenticate(headers(sign(OTHER_KEY, "msg_1", ts, BODY), "msg_1")) == "south"


def test_each_active_secret_of_a_rotation_verifies() -> None:
    ts = int(NOW.timestamp())
    assert authenticate(headers(sign(NEW_KEY, "msg_1", ts, BODY), "msg_1")) == "north"


def test_one_valid_signature_among_several_space_separated_suffices() -> None:
    ts = int(NOW.timestamp())
    good = sign(KEY, "msg_1", ts, BODY)
    signatures = f"v1,{base64.b64encode(b'x' * 32).decode()} v1a,whatever {good}"
    assert authenticate(headers(signatures, "msg_1")) == "north"


@pytest.mark.parametrize(
    "tamper",
    ["body", "id", "timestamp", "key", "version"],
)
def test_anything_changed_after_signing_is_refused(tamper: str) -> None:
    ts = int(NOW.timestamp())
    signature = sign(b"an-unknown-key" if tamper == "key" else KEY, "msg_1", ts, BODY)
    if tamper == "version":
        signature = "v2" + signature[2:]
    presented = headers(
        signature, "msg_2" if tamper == "id" else "msg_1", ts + (tamper == "timestamp")
    )
    body = BODY + b" " if tamper == "body" else BODY
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(presented, body)


@pytest.mark.parametrize("skew", [-301, 301, -3600])
def test_a_timestamp_outside_five_minutes_is_refused(skew: int) -> None:
    ts = int(NOW.timestamp()) + skew
    with pytest.raises(Unauthorized, match="outside the accepted window"):
        authenticate(headers(sign(KEY, "msg_1", ts, BODY), "msg_1", ts))


def test_a_timestamp_inside_five_minutes_is_accepted() -> None:
    ts = int(NOW.timestamp()) - 299
    assert authenticate(headers(sign(KEY, "msg_1", ts, BODY), "msg_1", ts)) == "north"


@pytest.mark.parametrize("ts", ["", "soon", "1e9", "١٢٣", "9" * 5000])
def test_missing_or_garbled_headers_are_401_not_500(ts: str) -> None:
    presented = headers(sign(KEY, "msg_1", 0, BODY), "msg_1")
    presented["webhook-timestamp"] = ts
    with pytest.raises(Unauthorized):
        authenticate(presented)


def test_without_webhook_signature_the_vendor_scheme_applies_to_its_own_credentials() -> None:
    # A Standard Webhooks secret is not an Inspera secret, and the other way round.
    native = hmac.new(b"north-native-secret", BODY, hashlib.sha1).hexdigest()
    assert authenticate({"x-inspera-signature": native}) == "north"
    with_key = hmac.new(whsec(KEY).encode(), BODY, hashlib.sha1).hexdigest()
    with pytest.raises(Unauthorized):
        authenticate({"x-inspera-signature": with_key})


def test_a_vendor_without_standard_webhooks_credentials_ignores_the_headers() -> None:
    ts = int(NOW.timestamp())
    presented = headers(sign(KEY, "msg_1", ts, BODY), "msg_1")
    with pytest.raises(Unauthorized, match="missing X-Inspera-Signature"):
        authenticate(presented, vendor="other")


def test_a_secret_that_is_not_whsec_base64_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[[tenants]]\nname='a'\n[[tenants.credentials]]\nvendor='caliper'\n"
        "scheme='standard-webhooks'\nsecret='whsec_not base64!'\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=re.escape("whsec_ and base64")):
        load_settings(path, {})


def test_the_tolerance_is_a_setting_of_the_credential(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        "[[tenants]]\nname='a'\n[[tenants.credentials]]\nvendor='caliper'\n"
        f"scheme='standard-webhooks'\nsecret='{whsec(KEY)}'\ntolerance_seconds=3600\n",
        encoding="utf-8",
    )
    tenants = load_settings(path, {}).tenants
    auth = Authenticator(tenants, clock=lambda: NOW)
    ts = int(NOW.timestamp()) - 3000
    presented = Credentials(headers(sign(KEY, "m", ts, BODY), "m", ts), {}, "", BODY)
    assert auth.authenticate(caliper.VENDOR, presented) == "a"


def test_a_caliper_401_names_bearer_but_a_refused_signature_names_no_scheme() -> None:
    tenants = (
        Tenant(
            "north",
            (
                Credential("caliper", "north-sensor-token"),
                Credential("caliper", whsec(KEY), scheme="standard-webhooks"),
            ),
        ),
    )
    auth = Authenticator(tenants, clock=lambda: NOW)
    ts = int(NOW.timestamp())
    refused: dict[str, Unauthorized] = {}
    for name, presented in {
        "bearer": {"authorization": "Bearer wrong", "content-type": "application/json"},
        "signature": headers(sign(OTHER_KEY, "msg_1", ts, BODY), "msg_1"),
    }.items():
        with pytest.raises(Unauthorized) as error:
            auth.authenticate(caliper.VENDOR, Credentials(presented, {}, "", BODY))
        refused[name] = error.value
    assert caliper.VENDOR.render_error(refused["bearer"]).headers == {"www-authenticate": "Bearer"}
    assert caliper.VENDOR.render_error(refused["signature"]).headers == {}
