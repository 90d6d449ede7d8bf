"""A captured Pearson delivery cannot be turned into another message, and its AUTHORIZATION
cannot be used forever (issue #18).

Pearson's MAC covers `timestamp + MESSAGE-ID + ...` with no separator, so a delivery whose
timestamp and MESSAGE-ID were "re-split" (characters moved from one to the other) keeps a valid
MAC while naming another MESSAGE-ID, and so another canonical record. The gateway takes only the
fixed-width timestamp Pearson's code writes (`yyyy-MM-dd'T'HH:mm:ss'Z'`, 20 characters, or the
`+0000` spelling of its demo subscriber), which pins the boundary: no re-split is a timestamp.
And by default it takes a timestamp only within Pearson's 72 h of redelivery, plus a margin, in
the past and a few minutes of clock skew ahead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from gateway.auth import Authenticator
from gateway.errors import Unauthorized
from gateway.settings import Settings
from gateway.vendors.pearson import signature
from gateway.vendors.pearson.settings import PearsonSettings
from tests.support.pearson import (
    DEMO,
    PRINCIPAL,
    authenticate,
    delivery,
    exam_completed,
    one,
    pearson_timestamp,
)

NOW = datetime(2026, 12, 4, 19, 20, 0, tzinfo=UTC)
SIGNED = "2026-12-04T19:13:09Z"  # seven minutes before NOW: a fresh, genuine delivery
ARABIC_INDIC = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))


def default_authenticator(now: datetime = NOW) -> Authenticator:
    """The gateway's Authenticator with the default Pearson settings and a fixed clock."""
    return Authenticator(DEMO, Settings().with_section(PearsonSettings()), clock=lambda: now)


def re_split(fields: dict[str, str], stamp: str, message_id: str) -> dict[str, str]:
    """The same delivery, same MAC, with the boundary between timestamp and MESSAGE-ID moved."""
    principal, signed_stamp, mac = fields["AUTHORIZATION"].split("|")
    assert signed_stamp + fields["MESSAGE-ID"] == stamp + message_id  # the MAC still matches
    return {**fields, "AUTHORIZATION": f"{principal}|{stamp}|{mac}", "MESSAGE-ID": message_id}


@pytest.mark.parametrize(
    ("signed", "stamp", "message_id"),
    [
        (SIGNED, "2026-12-04T19:13:09", "Zcap-42"),  # the zone letter moved into MESSAGE-ID
        (SIGNED, "2026-12-04T19:13:0", "9Zcap-42"),
        (SIGNED, "2026-12-04T19:13:09Zc", "ap-42"),  # MESSAGE-ID characters moved out
        ("2026-12-04T19:13:09+0000", "2026-12-04T19:13:09+00", "00cap-42"),
    ],
    ids=["zone-moved", "second-moved", "id-shortened", "demo-offset-shortened"],
)
def test_a_re_split_delivery_is_refused(signed: str, stamp: str, message_id: str) -> None:
    genuine = delivery({"eventId": "e-42"}, message_id="cap-42", timestamp=signed)
    auth_ = default_authenticator()
    assert authenticate(genuine, auth_) == "demo"
    with pytest.raises(Unauthorized):
        authenticate(re_split(genuine, stamp, message_id), auth_)


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-12-04T19:13:09",  # no zone
        "2026-12-04T19:13:09+01:00",  # an offset: not what Pearson's code writes
        "2026-12-04T20:13:09+0100",
        "2026-12-04T19:13:09.000Z",  # fractions
        "2026-12-04 19:13:09Z",
        "2026-12-04t19:13:09z",
        "1796411589",  # epoch seconds
        "",
        "yesterday",
        SIGNED.translate(ARABIC_INDIC),  # int() reads these digits; Pearson never writes them
        "2026-13-04T19:13:09Z",  # the right shape, no date
    ],
)
def test_only_pearsons_timestamp_format_is_taken(stamp: str) -> None:
    fields = delivery({"eventId": "1"}, timestamp=stamp)
    with pytest.raises(Unauthorized, match="timestamp"):
        authenticate(fields, default_authenticator())


def test_both_spellings_pearsons_code_writes_are_taken() -> None:
    # EventingClient: yyyy-MM-dd'T'HH:mm:ss'Z'; the demo subscriber's yyyy-MM-dd'T'HH:mm:ssZ in
    # UTC writes the same moment as +0000.
    for stamp in (SIGNED, SIGNED.replace("Z", "+0000")):
        assert authenticate(delivery(timestamp=stamp), default_authenticator()) == "demo"


HOUR = timedelta(hours=1)


@pytest.mark.parametrize(
    ("signed_at", "accepted"),
    [
        (NOW, True),
        (NOW - 72 * HOUR, True),  # the last redelivery, still carrying the first timestamp
        (NOW - 73 * HOUR, True),  # the margin
        (NOW - 73 * HOUR - timedelta(seconds=1), False),
        (NOW - timedelta(days=30), False),
        (NOW + timedelta(minutes=5), True),  # Pearson's clock a little ahead
        (NOW + timedelta(minutes=5, seconds=1), False),
        (NOW + timedelta(days=2), False),
    ],
    ids=["now", "72h-old", "73h-old", "73h-1s-old", "30d-old", "5min-ahead", "5min-1s", "2d-ahead"],
)
def test_the_default_window(signed_at: datetime, accepted: bool) -> None:
    fields = delivery({"eventId": "1"}, timestamp=pearson_timestamp(signed_at))
    if accepted:
        assert authenticate(fields, default_authenticator()) == "demo"
    else:
        with pytest.raises(Unauthorized, match="outside the accepted window"):
            authenticate(fields, default_authenticator())


def refusal(fields: dict[str, str]) -> str:
    with pytest.raises(Unauthorized) as refused:
        authenticate(fields, default_authenticator())
    return refused.value.message


def test_an_unknown_principal_and_a_wrong_mac_get_the_same_answer() -> None:
    stamp = pearson_timestamp(NOW)
    unknown = refusal(delivery({"eventId": "1"}, principal="guessed-principal", timestamp=stamp))
    wrong_mac = refusal(delivery({"eventId": "1"}, secret="another-16-bytes", timestamp=stamp))
    assert unknown == wrong_mac


def test_an_unknown_principal_costs_the_same_mac_computation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing must not tell a known principal from an unknown one: both compute one AES-CMAC."""
    calls: list[int] = []
    real: Callable[[bytes, bytes], bytes] = signature.aes_cmac

    def counted(key: bytes, message: bytes) -> bytes:
        calls.append(len(message))
        return real(key, message)

    monkeypatch.setattr(signature, "aes_cmac", counted)
    stamp = pearson_timestamp(NOW)
    refusal(delivery({"eventId": "1"}, secret="another-16-bytes", timestamp=stamp))
    known = list(calls)
    calls.clear()
    refusal(delivery({"eventId": "1"}, principal="guessed-principal", timestamp=stamp))
    assert calls == known
    assert len(known) == 1
    assert PRINCIPAL != "guessed-principal"


def test_a_genuine_redelivery_keeps_its_record_id() -> None:
    first = delivery(exam_completed(), message_id="cap-42", timestamp=SIGNED)
    later = pearson_timestamp(NOW + timedelta(hours=2))
    again = delivery(exam_completed(), message_id="cap-42", timestamp=later)
    assert one(first)["id"] == one(again)["id"]
