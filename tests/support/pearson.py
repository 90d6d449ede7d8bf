"""pearson"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from gateway.auth import Authenticator, Credentials
from gateway.canonical import NormalizeContext
from gateway.pipeline import Normalized, normalize_items, split_request
from gateway.settings import Credential, Settings, Tenant
from gateway.vendors.base import Inbound
from gateway.vendors.pearson import VENDOR
from gateway.vendors.pearson.settings import PearsonSettings
from tests.support.golden import FIXTURES, GoldenRequest, Outcome
from tests.support.schemas import CANONICAL, SCHEMAS

PEARSON = FIXTURES / "pearson"
DELIVERIES_IN = PEARSON / "in"
DELIVERIES = sorted(DELIVERIES_IN.glob("*.json"))
GOLDEN = PEARSON / "golden"
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
    tenant = (auth or authenticator()).authenticate(VENDOR, presented)
    assert isinstance(tenant, str)  # a scheme without fetched keys answers at once
    return tenant


CTX = NormalizeContext("uni", "pearson", datetime(2026, 1, 1, tzinfo=UTC), "req-1")


def exam_completed(**object_fields: Any) -> dict[str, Any]:
    """The seed's example event, with `object` fields replaced."""
    event: dict[str, Any] = {
        "eventId": "bb2d559b-8487-4fc1-8714-f2907a2c2434",
        "eventDate": "2013-05-17T14:06:10.688Z",
        "eventType": STUDENT_EXAM_COMPLETED,
        "object": {
            "id": "pearson.ls.assessment.studentexam_123456",
            "type": "pearson.ls.assessment.studentexam",
            "comment": " ",
            "endTime": "2013-05-17T14:06:10.673Z",
            "startTime": "2013-05-17T14:04:38.000Z",
            "isLateSubmission": False,
            "examId": 123456,
            "isAutoGradingOn": True,
            "isComplete": True,
        },
        "actor": {
            "id": "7777777",
            "type": "user",
            "firstName": "John",
            "lastName": "Smith",
            "emailAddress": "john.smith@domain.com",
            "userName": "jsmith123",
        },
        "contexts": {
            "course": {
                "id": "2022425",
                "title": "What About Bob? 101",
                "displayCourseCode": "WAB - 101",
                "callNumbers": [],
                "nodes": ["402629"],
            },
            "ep": {"id": "987654", "clientString": "epsamplestring"},
        },
    }
    event["object"].update(object_fields)
    return event


def run(fields: dict[str, str], include_original: bool = False) -> Normalized:
    items = split_request(VENDOR, Inbound("POST", FORM, form(fields)), SCHEMAS)
    return normalize_items(VENDOR, items, CTX, SCHEMAS, include_original)


def one(fields: dict[str, str], include_original: bool = False) -> dict[str, Any]:
    normalized = run(fields, include_original)
    assert not normalized.rejected, normalized.rejected
    (record,) = normalized.canonical
    assert not CANONICAL.errors(record), CANONICAL.errors(record)
    return record


SEED = orjson.loads((DELIVERIES_IN / "seed-example.json").read_bytes())


def fresh_exam_completed() -> dict[str, Any]:
    """The example event of Pearson's documentation (seed 001), as a new event: its own eventId
    (the gateway deduplicates on eventId as well as on MESSAGE-ID)."""
    event: dict[str, Any] = orjson.loads(orjson.dumps(SEED["fields"]["PAYLOAD"]))  # a copy
    event["eventId"] = str(uuid.uuid4())
    return event


SIGNED_AT = "2015-01-20T18:58:11Z"


def fixture_fields(path: Path) -> dict[str, str]:
    """A fixture's form fields as Pearson sends them (PAYLOAD as a string) and signed."""
    fields = orjson.loads(path.read_bytes())["fields"]
    sent = {name: payload_text(v) if name == "PAYLOAD" else v for name, v in fields.items()}
    sent["AUTHORIZATION"] = sign(sent, timestamp=SIGNED_AT)
    return sent


# The fixtures that must not become canonical records, and why (the goldens pin the details).
DEAD_LETTERED = {
    "impossible-event-date.json": "unmappable",
    "invalid-json-payload.json": "schema_violation",
    "missing-message-id.json": "schema_violation",
    "non-json-payload-content-type.json": "schema_violation",
    "schema-violation-actor-without-id.json": "schema_violation",
    "unknown-message-type.json": "unmappable",
}


def golden_requests(path: Path, relative: Path) -> list[GoldenRequest]:
    """A delivery fixture (`{"about", "fields"}`) form-encoded and signed as LearningStudio
    Eventing sends it; one record, or one dead letter for the fixtures of DEAD_LETTERED."""
    if path.suffix != ".json":
        return []

    def expect(outcome: Outcome) -> None:
        reasons = [letter["reason"] for letter in outcome["deadletters"]]
        if path.name in DEAD_LETTERED:
            assert (outcome["canonical"], reasons) == ([], [DEAD_LETTERED[path.name]])
        else:
            assert (len(outcome["canonical"]), reasons) == (1, [])

    inbound = Inbound("POST", FORM, form(fixture_fields(path)))
    return [GoldenRequest(relative, inbound, expect=expect)]
