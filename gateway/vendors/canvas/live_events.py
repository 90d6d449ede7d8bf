"""Canvas Live Events over HTTPS (Canvas Data Services): one event per request, pushed by
Canvas itself, on `POST /v1/canvas/live-events`.

The body is either a JWT signed RS256 by Instructure ("signed JWT payloads" on; the `kid` names
a key of its JWKS, see `gateway.vendors.canvas.jwks`), whatever content type Canvas sends, or,
for subscriptions without signing, the event as plain JSON with the tenant's secret in the
query (`?token=`). The event is in Canvas's own format (`{"metadata": {...}, "body": {...}}`)
or in Caliper 1.1 (an Envelope of one event), which goes through the Caliper normalizer exactly
as if it had been posted to the Caliper route, its records named `canvas`.

The tenant is the one whose Canvas credential lists the event's root account
(`metadata.root_account_uuid`; in Caliper, the `com.instructure.canvas` extension of the event
or its actor): read from the signed payload, never from anything unsigned. The mapping:
docs/vendors/canvas.md#live-events.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any, Final

import jwt

from gateway.canonical import CanonicalEvent, EventType, NormalizeContext, compact, normalize_time
from gateway.errors import KeysUnavailable, MalformedPayload, NormalizeError, Unauthorized
from gateway.limits import InvalidJson, loads_json
from gateway.vendors.base import Credentials, Inbound, Item, VerifierContext
from gateway.vendors.caliper import VENDOR as CALIPER
from gateway.vendors.caliper import normalize as caliper
from gateway.vendors.canvas.jwks import RS256, LiveEventKeys
from gateway.vendors.canvas.settings import CanvasSettings

NAME: Final = "canvas"
PATH: Final = "/v1/canvas/live-events"
LIVE_EVENT_SCHEMA: Final = "liveEvent"
CANVAS_EXTENSION: Final = "com.instructure.canvas"
CANVAS_FORMAT, CALIPER_FORMAT = "canvas", "caliper"
FORMATS: Final = frozenset({CANVAS_FORMAT, CALIPER_FORMAT})
# Personal data of Live Events' metadata (and of Caliper's Canvas extension), under the
# tenant's privacy policy wherever they appear.
PERSONAL_KEYS: Final = frozenset({"user_login", "user_sis_id", "client_ip", "user_agent"})
# A JWS in compact form: three base64url parts (the payload may be empty, the others not).
_COMPACT_JWS: Final = re.compile(rb"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+")
_NOT_A_LIVE_EVENT: Final = (
    "not a Canvas Live Event: expected a signed JWT or a JSON object with "
    "`metadata` and `body` (Canvas format) or a Caliper Envelope"
)
_BAD_SIGNATURE: Final = "the Live Event's signature cannot be verified"
# Submission facts (submission_created, submission_updated) keep `edu.activity.generic`: Canvas
# emits them for drafts, resubmissions and grading alike; `data.vendor.workflow_state` tells.
_TYPES: Final = {
    "quiz_submitted": EventType.ATTEMPT_SUBMITTED,
    "grade_change": EventType.ATTEMPT_GRADED,
}


def is_jwt(body: bytes) -> bool:
    """Whether the body is a JWS in compact form (what Canvas sends with signing on)."""
    return _COMPACT_JWS.fullmatch(body.strip()) is not None


def claims_of(body: bytes) -> Any:
    """The JSON a compact JWS carries, unverified: only after the verifier proved it."""
    payload = body.strip().split(b".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))
        return loads_json(raw)
    except (binascii.Error, ValueError, InvalidJson):
        raise MalformedPayload("the JWT's payload is not JSON") from None


def root_account(event: Any) -> str | None:
    """The root account a Live Event names (Canvas format or a Caliper Envelope)."""
    if not isinstance(event, dict):
        return None
    metadata = event.get("metadata")
    if isinstance(metadata, dict):
        found = metadata.get("root_account_uuid")
        return found if isinstance(found, str) and found else None
    data = event.get("data")
    if isinstance(data, list):
        # Every event of the Envelope must name the same account: it is one tenant's delivery.
        accounts = {_caliper_account(element) for element in data}
        if len(accounts) == 1:
            return accounts.pop()
    return None


def _caliper_account(element: Any) -> str | None:
    if not isinstance(element, dict):
        return None
    for holder in (element, element.get("actor")):
        extensions = holder.get("extensions") if isinstance(holder, dict) else None
        canvas = extensions.get(CANVAS_EXTENSION) if isinstance(extensions, dict) else None
        found = canvas.get("root_account_uuid") if isinstance(canvas, dict) else None
        if isinstance(found, str) and found:
            return found
    return None


class LiveEventsJwt:
    """The verifier of Live Events: Instructure's RS256 signature and the root account it
    signs, or, unsigned, the tenant's secret in `?token=` and the root account it owns."""

    def __init__(self, context: VerifierContext) -> None:
        self._settings = context.settings.section(CanvasSettings)
        self.keys = LiveEventKeys(self._settings)
        self._owners: dict[str, str] = {}
        self._tokens: list[tuple[bytes, str]] = []
        for tenant, credential in context.credentials:
            for account in credential.accounts:
                self._owners[account] = tenant
            if credential.accounts:  # only a credential for Live Events opens this route
                self._tokens += [(s.encode(), tenant) for s in credential.active_secrets]

    def head(
        self, headers: Mapping[str, str], query: Mapping[str, str], media_type: str
    ) -> str | None:
        """None: the signature (or the root account a token must own) is in the body."""
        return None

    def verify(self, presented: Credentials) -> str | Awaitable[str]:
        """The tenant owning the event's root account, once its signature (or token) holds."""
        if is_jwt(presented.body):
            return self._verify_signed(presented.body.strip().decode("ascii"))
        return self._verify_token(presented)

    def _verify_token(self, presented: Credentials) -> str:
        token = presented.query.get("token", "").encode("utf-8")
        if not token:
            raise Unauthorized("a Live Event is a signed JWT, or JSON with the tenant's ?token=")
        tenant = None
        for secret, owner in self._tokens:  # every one compared: timing tells nothing
            if hmac.compare_digest(secret, token):
                tenant = owner
        if tenant is None:
            raise Unauthorized("invalid token")
        try:
            event = loads_json(presented.body)
        except InvalidJson:
            raise MalformedPayload(_NOT_A_LIVE_EVENT) from None
        account = root_account(event)
        if account is None:
            raise MalformedPayload(f"{_NOT_A_LIVE_EVENT}, naming its root account")
        if self._owners.get(account) != tenant:
            raise Unauthorized("the event's root account is not this token's tenant's")
        return tenant

    async def _verify_signed(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized(_BAD_SIGNATURE) from None
        kid = header.get("kid")
        if header.get("alg") != RS256 or not isinstance(kid, str) or not kid:
            raise Unauthorized("a Live Event must be signed RS256 with a `kid`")
        key = await self.keys.key_for(kid)
        if key is None:
            if not self.keys.loaded:
                raise KeysUnavailable("the Live Events signing keys could not be fetched yet")
            raise Unauthorized("the Live Event is signed with a key that is not published")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[RS256],
                leeway=self._settings.live_events_leeway_seconds,
                options={"require": [], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("the Live Event's token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("the Live Event's token is not valid yet") from None
        except jwt.PyJWTError:
            raise Unauthorized(_BAD_SIGNATURE) from None
        account = root_account(claims)
        tenant = self._owners.get(account) if account is not None else None
        if tenant is None:
            raise Unauthorized("the Live Event's root account belongs to no tenant")
        return tenant


def decode(inbound: Inbound) -> dict[str, Any]:
    """The event: a JWT's claims (verified already) or the JSON body."""
    body = inbound.body
    if is_jwt(body):
        event = claims_of(body)
    else:
        try:
            event = loads_json(body)
        except InvalidJson as error:
            raise MalformedPayload(f"the body is not JSON: {error}") from None
    if not isinstance(event, dict):
        raise MalformedPayload(_NOT_A_LIVE_EVENT)
    if isinstance(event.get("metadata"), dict) and isinstance(event.get("body"), dict):
        return event
    if "data" in event and "sensor" in event:  # a Caliper Envelope
        return _caliper_envelope(event)
    raise MalformedPayload(_NOT_A_LIVE_EVENT)


def _caliper_envelope(envelope: dict[str, Any]) -> dict[str, Any]:
    version = envelope.get("dataVersion")
    if version not in caliper.DATA_VERSIONS or not isinstance(envelope.get("data"), list):
        raise MalformedPayload("a Caliper Live Event must be a Caliper 1.1 or 1.2 Envelope")
    return envelope


def split(event: dict[str, Any]) -> list[Item]:
    """One item: the Canvas-format event, or each element of a Caliper Envelope, validated
    against Caliper's schemas."""
    if "metadata" in event:
        metadata = event["metadata"]
        return [Item(event, LIVE_EVENT_SCHEMA, "", _identity(metadata), {"format": CANVAS_FORMAT})]
    items = []
    for item in caliper.split(event):
        ref = CALIPER.schema_ref(item.schema)  # validated against Caliper's own schemas
        meta = {**item.meta, "format": CALIPER_FORMAT, "caliper_schema": item.schema}
        items.append(replace(item, schema=ref, meta=meta))
    return items


def _identity(metadata: Mapping[str, Any]) -> str | None:
    """The request id + event name + time: Canvas redelivers the same event on failure, and
    one request may emit several events (their names differ)."""
    parts = [metadata.get(k) for k in ("request_id", "event_name", "event_time")]
    if not all(isinstance(p, str) and p for p in parts):
        return None
    return "live-event:" + "|".join(str(p) for p in parts)


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """The canonical records of one Live Event (see the mapping in docs/vendors/canvas.md)."""
    if item.meta.get("format") == CALIPER_FORMAT:
        events = caliper.normalize(replace(item, schema=item.meta["caliper_schema"]), ctx)
        return [_as_canvas(event) for event in events]
    metadata: dict[str, Any] = item.payload["metadata"]
    body: dict[str, Any] = item.payload["body"]
    name = metadata["event_name"]
    stamp = metadata.get("event_time")
    if not isinstance(stamp, str):
        raise NormalizeError("/metadata/event_time", "a Live Event needs its event_time")
    time = normalize_time(stamp, "/metadata/event_time")
    vendor = compact(
        {
            "name": NAME,
            "event_type": name,
            "event_id": item.identity,
            "format": CANVAS_FORMAT,
            "request_id": metadata.get("request_id"),
            "root_account_uuid": metadata.get("root_account_uuid"),
            "hostname": metadata.get("hostname"),
            "user_login": metadata.get("user_login"),
            "user_sis_id": metadata.get("user_sis_id"),
            "client_ip": metadata.get("client_ip"),
            "user_agent": metadata.get("user_agent"),
        }
    )
    course = _course(metadata)
    if name == "quiz_submitted":
        data = compact(
            {
                "action": "submitted",
                "learner": _ref(metadata.get("user_id"), "User"),
                "assessment": _ref(body.get("quiz_id"), "Quiz"),
                "attempt": _ref(body.get("submission_id"), "QuizSubmission"),
                "course": course,
                "vendor": vendor,
            }
        )
        subject = _id(body.get("submission_id"))
    elif name in ("submission_created", "submission_updated"):
        attempt = _ref(body.get("submission_id"), "Submission")
        if attempt is not None and isinstance(body.get("attempt"), int):
            attempt["count"] = body["attempt"]
        vendor.update(
            compact(
                {
                    "workflow_state": body.get("workflow_state"),
                    "submission_type": body.get("submission_type"),
                    "submitted_at": body.get("submitted_at"),
                    "late": body.get("late"),
                    "missing": body.get("missing"),
                    "grade": body.get("grade"),
                }
            )
        )
        data = compact(
            {
                "action": name,
                "learner": _ref(body.get("user_id"), "User"),
                "assessment": _ref(body.get("assignment_id"), "Assignment"),
                "attempt": attempt,
                "score": compact({"given": _number(body.get("score"))}) or None,
                "course": course,
                "vendor": vendor,
            }
        )
        subject = _id(body.get("submission_id"))
    elif name == "grade_change":
        vendor.update(compact({"grade": body.get("grade"), "old_grade": body.get("old_grade")}))
        grader = _ref(body.get("grader_id"), "User")
        data = compact(
            {
                "action": "graded",
                "learner": _ref(body.get("user_id") or body.get("student_id"), "User"),
                "actor": grader,
                "assessment": _ref(body.get("assignment_id"), "Assignment"),
                "attempt": _ref(body.get("submission_id"), "Submission"),
                "score": compact(
                    {
                        "given": _number(body.get("score")),
                        "max": _number(body.get("points_possible")),
                        "scored_by": grader["id"] if grader else None,
                    }
                )
                or None,
                "course": course,
                "vendor": vendor,
            }
        )
        subject = _id(body.get("submission_id"))
    else:
        data = compact(
            {
                "action": name,
                "learner": _ref(metadata.get("user_id"), "User"),
                "course": course,
                "vendor": vendor,
            }
        )
        subject = None
    kind = _TYPES.get(name, EventType.ACTIVITY)
    return [CanonicalEvent(kind, time, item.identity or "", data, subject)]


def _as_canvas(event: CanonicalEvent) -> CanonicalEvent:
    """A Caliper record of a Live Event: Canvas's, with the format it came in."""
    vendor = {**event.data["vendor"], "name": NAME, "format": CALIPER_FORMAT}
    return replace(event, data={**event.data, "vendor": vendor})


def _id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | str) and str(value):
        return str(value)
    return None


def _ref(value: Any, kind: str) -> dict[str, Any] | None:
    found = _id(value)
    return None if found is None else {"id": found, "type": kind}


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _course(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    if metadata.get("context_type") != "Course":
        return None
    return _ref(metadata.get("context_id"), "Course")
