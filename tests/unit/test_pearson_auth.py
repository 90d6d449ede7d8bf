"""Pearson's AES-CMAC scheme: RFC 4493 vectors, and `Authenticator` against an independent signer.

`sign` and `delivery` build deliveries the way LearningStudio Eventing does (Pearson's
`EventingClient.generateAuthToken`): AES-CMAC keyed with the secret's bytes over
timestamp + MESSAGE-ID + MESSAGE-TYPE + PAYLOAD-CONTENT-TYPE + PAYLOAD, lower-case hex, in
`principal|timestamp|mac`. They use `cryptography`'s CMAC directly, not the gateway's own
(gateway/vendors/pearson/signature.py), so the gateway is checked against the documented
algorithm rather than against itself. The integration
and golden tests sign their deliveries with them too.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.auth import Authenticator, Credentials
from gateway.errors import Unauthorized
from gateway.settings import Credential, Settings, Tenant
from gateway.vendors.pearson import VENDOR as PEARSON
from gateway.vendors.pearson.settings import PearsonSettings
from gateway.vendors.pearson.signature import aes_cmac, aes_cmac_hex

PRINCIPAL = "dev-principal"  # gateway.dev.toml, tenant demo
SECRET = "dev-pearson-key!"
FORM = "application/x-www-form-urlencoded"
STUDENT_EXAM_COMPLETED = "pearson.ls.assessment.studentexam.completed"


def pearson_timestamp(moment: datetime | None = None) -> str:
    """The timestamp as Pearson's Java library writes it (`yyyy-MM-dd'T'HH:mm:ss'Z'`, UTC)."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign(
    fields: dict[str, str],
    *,
    principal: str = PRINCIPAL,
    secret: str = SECRET,
    timestamp: str | None = None,
    delimiter: str = "|",
) -> str:
    """The AUTHORIZATION value LearningStudio Eventing puts on a delivery of `fields`."""
    stamp = pearson_timestamp() if timestamp is None else timestamp
    signed = "".join(
        (
            stamp,
            fields.get("MESSAGE-ID", ""),
            fields.get("MESSAGE-TYPE", ""),
            fields.get("PAYLOAD-CONTENT-TYPE", ""),
            fields.get("PAYLOAD", ""),
        )
    )
    cmac = CMAC(algorithms.AES(secret.encode("utf-8")))
    cmac.update(signed.encode("utf-8"))
    return delimiter.join((principal, stamp, cmac.finalize().hex()))


def payload_text(payload: Any) -> str:
    """PAYLOAD as sent: the event JSON as a string (strings are sent as they are)."""
    return payload if isinstance(payload, str) else orjson.dumps(payload).decode()


def delivery(
    payload: Any = None,
    *,
    message_id: str | None = None,
    message_type: str = STUDENT_EXAM_COMPLETED,
    content_type: str = "application/json",
    attempt_id: str | None = None,
    delimiter: str | None = None,
    **sign_options: Any,
) -> dict[str, str]:
    """A signed delivery's form fields (a fresh MESSAGE-ID and DELIVERY-ATTEMPT-ID unless given)."""
    fields = {
        "DELIVERY-ATTEMPT-ID": attempt_id or str(uuid.uuid4()),
        "MESSAGE-ID": message_id or str(uuid.uuid4()),
        "MESSAGE-TYPE": message_type,
        "PAYLOAD-CONTENT-TYPE": content_type,
        "PAYLOAD": payload_text({} if payload is None else payload),
    }
    if delimiter is not None:
        fields["AUTHORIZATION-DELIMITER"] = delimiter
        sign_options["delimiter"] = delimiter
    fields["AUTHORIZATION"] = sign(fields, **sign_options)
    return fields


def form(fields: dict[str, str]) -> bytes:
    """The url-encoded body (UTF-8), as a form-posting HTTP client sends it."""
    return urlencode(fields).encode("ascii")


# RFC 4493 §4: AES-128 key and the four examples (empty, 16, 40 and 64 bytes).
RFC4493_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
RFC4493_MESSAGE = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("length", "tag"),
    [
        (0, "bb1d6929e95937287fa37d129b756746"),
        (16, "070a16b46b4d4144f79bdd9dd04a287c"),
        (40, "dfa66747de9ae63030ca32611497c827"),
        (64, "51f0bebf7e3b9d92fc49741779363cfe"),
    ],
    ids=["example-1-empty", "example-2-16-bytes", "example-3-40-bytes", "example-4-64-bytes"],
)
def test_aes_cmac_matches_rfc_4493(length: int, tag: str) -> None:
    assert aes_cmac(RFC4493_KEY, RFC4493_MESSAGE[:length]) == bytes.fromhex(tag)


def test_aes_cmac_hex_is_the_documented_mac_over_utf8() -> None:
    fields = delivery({"title": "Análisis — 100 %"}, timestamp="2015-01-20T18:58:11Z")
    mac = fields["AUTHORIZATION"].split("|")[2]
    signed = "2015-01-20T18:58:11Z" + "".join(
        fields[k] for k in ("MESSAGE-ID", "MESSAGE-TYPE", "PAYLOAD-CONTENT-TYPE", "PAYLOAD")
    )
    assert aes_cmac_hex(SECRET, signed) == mac


DEMO = (Tenant("demo", (Credential("pearson", SECRET, PRINCIPAL),)),)


def authenticator(
    max_age_seconds: float = 0.0, now: datetime | None = None, tenants: tuple[Tenant, ...] = DEMO
) -> Authenticator:
    """The gateway's Authenticator, with a fixed clock when `now` is given (window off unless
    `max_age_seconds` is given; the default window is tested on its own)."""
    settings = Settings().with_section(PearsonSettings(max_age_seconds=max_age_seconds))
    if now is None:
        return Authenticator(tenants, settings)
    return Authenticator(tenants, settings, clock=lambda: now)


def authenticate(
    fields: dict[str, str], auth: Authenticator | None = None, media_type: str = FORM
) -> str:
    presented = Credentials(headers={}, query={}, media_type=media_type, body=form(fields))
    tenant = (auth or authenticator()).authenticate(PEARSON, presented)
    assert isinstance(tenant, str)  # a scheme without fetched keys answers at once
    return tenant


def test_a_signed_delivery_names_its_tenant() -> None:
    assert authenticate(delivery({"eventId": "1"})) == "demo"


def test_each_principal_maps_to_its_own_tenant() -> None:
    auth = authenticator(
        tenants=(
            Tenant("north", (Credential("pearson", "n" * 16, "north-principal"),)),
            Tenant("south", (Credential("pearson", "s" * 32, "south-principal"),)),
        )
    )
    north = delivery(principal="north-principal", secret="n" * 16)
    south = delivery(principal="south-principal", secret="s" * 32)
    assert authenticate(north, auth) == "north"
    assert authenticate(south, auth) == "south"
    crossed = delivery(principal="north-principal", secret="s" * 32)
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(crossed, auth)


def test_the_mac_hex_is_case_insensitive() -> None:
    fields = delivery({"eventId": "1"})
    principal, stamp, mac = fields["AUTHORIZATION"].split("|")
    assert mac != mac.upper()
    fields["AUTHORIZATION"] = f"{principal}|{stamp}|{mac.upper()}"
    assert authenticate(fields) == "demo"


@pytest.mark.parametrize("delimiter", ["~", "::", ","], ids=repr)
def test_a_declared_delimiter_splits_the_authorization(delimiter: str) -> None:
    fields = delivery({"eventId": "1"}, delimiter=delimiter)
    assert "|" not in fields["AUTHORIZATION"]
    assert authenticate(fields) == "demo"
    # The same AUTHORIZATION without its AUTHORIZATION-DELIMITER is one part, not three.
    del fields["AUTHORIZATION-DELIMITER"]
    with pytest.raises(Unauthorized, match="principal\\|timestamp\\|mac"):
        authenticate(fields)


def test_an_empty_delimiter_field_means_the_default() -> None:
    fields = delivery({"eventId": "1"})
    fields["AUTHORIZATION-DELIMITER"] = ""
    assert authenticate(fields) == "demo"


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "dev-principal",
        "dev-principal|2015-01-20T18:58:11Z",
        "dev-principal|2015-01-20T18:58:11Z|00|extra",
        "|||",
    ],
    ids=["empty", "one-part", "two-parts", "four-parts", "four-empty-parts"],
)
def test_authorization_must_have_exactly_three_parts(authorization: str) -> None:
    fields = delivery({"eventId": "1"})
    fields["AUTHORIZATION"] = authorization
    with pytest.raises(Unauthorized, match="principal\\|timestamp\\|mac"):
        authenticate(fields)


def test_a_missing_authorization_is_unauthorized() -> None:
    fields = delivery({"eventId": "1"})
    del fields["AUTHORIZATION"]
    with pytest.raises(Unauthorized):
        authenticate(fields)


def test_an_unknown_principal_is_unauthorized_even_with_the_right_secret() -> None:
    # Answered as a wrong MAC is: the answer does not tell which principals exist.
    with pytest.raises(Unauthorized, match=r"^invalid signature$"):
        authenticate(delivery({"eventId": "1"}, principal="someone-else"))


def test_a_principal_of_another_vendor_is_unknown() -> None:
    auth = authenticator(tenants=(Tenant("demo", (Credential("inspera", SECRET, PRINCIPAL),)),))
    with pytest.raises(Unauthorized, match=r"^invalid signature$"):
        authenticate(delivery({"eventId": "1"}), auth)


def test_a_wrong_secret_is_an_invalid_signature() -> None:
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(delivery({"eventId": "1"}, secret="another-16-bytes"))


@pytest.mark.parametrize("field", ["MESSAGE-ID", "MESSAGE-TYPE", "PAYLOAD-CONTENT-TYPE", "PAYLOAD"])
def test_every_signed_field_is_covered_by_the_mac(field: str) -> None:
    fields = delivery({"eventId": "1"})
    fields[field] += " "
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(fields)


def test_the_timestamp_is_covered_by_the_mac() -> None:
    fields = delivery({"eventId": "1"}, timestamp="2015-01-20T18:58:11Z")
    fields["AUTHORIZATION"] = fields["AUTHORIZATION"].replace("18:58:11", "18:58:12")
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(fields)


def test_unsigned_fields_are_not_covered() -> None:
    # DELIVERY-ATTEMPT-ID changes with every redelivery and is not signed (Pearson's own check).
    fields = delivery({"eventId": "1"})
    fields["DELIVERY-ATTEMPT-ID"] = "another attempt"
    assert authenticate(fields) == "demo"


@pytest.mark.parametrize(
    "mac", ["é" * 32, "\u00ff" * 32, "\U0001d7d8" * 32], ids=["e-acute", "y-diaeresis", "math-zero"]
)
def test_a_non_ascii_mac_is_unauthorized_not_a_crash(mac: str) -> None:
    fields = delivery({"eventId": "1"})
    principal, stamp, _ = fields["AUTHORIZATION"].split("|")
    fields["AUTHORIZATION"] = f"{principal}|{stamp}|{mac}"
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(fields)


@pytest.mark.parametrize(
    "media_type", ["application/json", "text/plain", "multipart/form-data", ""]
)
def test_the_signature_is_read_from_forms_only(media_type: str) -> None:
    # The AUTHORIZATION field travels in the form: any other body carries no credential.
    with pytest.raises(Unauthorized):
        authenticate(delivery({"eventId": "1"}), media_type=media_type)


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("signed_at", "accepted"),
    [
        (NOW, True),
        (NOW - timedelta(seconds=299), True),
        (NOW + timedelta(seconds=299), True),  # a sender's clock a little ahead
        (NOW - timedelta(seconds=301), False),
        (NOW + timedelta(seconds=301), False),
        (NOW - timedelta(hours=72), False),
    ],
    ids=["now", "299s-old", "299s-ahead", "301s-old", "301s-ahead", "72h-old"],
)
def test_the_freshness_window_when_configured(signed_at: datetime, accepted: bool) -> None:
    auth = authenticator(300.0, NOW)
    fields = delivery({"eventId": "1"}, timestamp=pearson_timestamp(signed_at))
    if accepted:
        assert authenticate(fields, auth) == "demo"
    else:
        with pytest.raises(Unauthorized, match="outside the accepted window"):
            authenticate(fields, auth)


@pytest.mark.parametrize(
    "timestamp",
    ["2026-03-01T11:58:00Z", "2026-03-01T11:58:00+0000"],
    ids=["java-library-Z", "java-demo-+0000"],
)
def test_the_window_reads_the_timestamp_shapes_pearson_code_writes(timestamp: str) -> None:
    assert authenticate(delivery(timestamp=timestamp), authenticator(300.0, NOW)) == "demo"


@pytest.mark.parametrize("max_age", [0.0, 300.0], ids=["window-off", "window-on"])
def test_a_timestamp_in_another_shape_fails_window_or_not(max_age: float) -> None:
    # The format is what makes the MAC's timestamp|MESSAGE-ID boundary unambiguous
    # (tests/unit/test_pearson_replay.py): it is checked even with the window turned off.
    for stamp in ("1421780291000", "2026-03-01T12:58:00+01:00", "2026-03-01T11:58:00"):
        with pytest.raises(Unauthorized, match="timestamp is not"):
            authenticate(delivery({"eventId": "1"}, timestamp=stamp), authenticator(max_age, NOW))


def test_the_default_window_takes_72_hour_redeliveries_and_no_older() -> None:
    assert PearsonSettings().max_age_seconds == 73 * 3600
    assert PearsonSettings().max_future_seconds == 300
    auth = Authenticator(DEMO, Settings().with_section(PearsonSettings()), clock=lambda: NOW)
    redelivered = delivery({"eventId": "1"}, timestamp=pearson_timestamp(NOW - timedelta(hours=72)))
    assert authenticate(redelivered, auth) == "demo"
    old = delivery({"eventId": "1"}, timestamp=pearson_timestamp(NOW - timedelta(days=30)))
    with pytest.raises(Unauthorized, match="outside the accepted window"):
        authenticate(old, auth)
    # max_age_seconds = 0 still turns the window off, for whoever needs that.
    assert authenticate(old, authenticator(0.0, NOW)) == "demo"


def test_freshness_is_judged_only_after_the_signature() -> None:
    # A forged delivery learns nothing about the window.
    stale = delivery({"eventId": "1"}, timestamp="2015-01-20T18:58:11Z", secret="another-16-bytes")
    with pytest.raises(Unauthorized, match="invalid signature"):
        authenticate(stale, authenticator(300.0, NOW))
