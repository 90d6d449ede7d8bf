"""xAPI 1.0.3 statements (IEEE 9274.1.1-2023): the decoder, the checks the spec makes a 400, and
the pure mapping onto canonical records. See docs/vendors/xapi.md for the table.

An xAPI batch is atomic: one statement the spec refuses refuses the whole request (`decode`
raises MalformedPayload with a JSON pointer per problem), unlike a Caliper envelope. A statement
without an `id` gets one here (as an LRS assigns it; derived from its content), so the items
the pipeline sees, and the ids the sender is answered with, are the same.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

import orjson

from gateway.canonical import (
    CanonicalEvent,
    EventType,
    NormalizeContext,
    compact,
    content_digest,
    normalize_time,
)
from gateway.errors import (
    FieldError,
    GatewayError,
    MalformedPayload,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.limits import InvalidJson, loads_json
from gateway.vendors.base import Inbound, Item, Reply, problem_reply

NAME: Final = "xapi"
BASE: Final = "/xapi"
STATEMENTS_PATH: Final = BASE + "/statements"
ABOUT_PATH: Final = BASE + "/about"
STATEMENT_SCHEMA: Final = "statement"
VERSION_HEADER: Final = "x-experience-api-version"
VERSION: Final = "1.0.3"  # what the gateway answers in X-Experience-API-Version
SUPPORTED_VERSIONS: Final = ("1.0.3", "1.0.2", "1.0.1", "1.0.0", "2.0.0")
# What the about resource lists: 1.0.x only. 2.0.0 requests are taken, but 1.0.x clients
# (TinCanPython's About) refuse an about that lists a version they do not know.
ABOUT_VERSIONS: Final = SUPPORTED_VERSIONS[:4]
WWW_AUTHENTICATE: Final = 'Basic realm="xapi", Bearer'
JSON: Final = "application/json"
# The namespace of the ids assigned to statements sent without one; fixed forever.
ID_NAMESPACE: Final = uuid.UUID("3d0f5a8e-6c1b-4f7a-9b2e-8a4c7d1e5f60")
MULTIPART: Final = "multipart/mixed"

ADL_VERBS: Final = "http://adlnet.gov/expapi/verbs/"
VOIDED: Final = ADL_VERBS + "voided"
# The canonical type of a voiding statement: consumers void the statement its `subject` names.
VOIDED_TYPE: Final = EventType.EVENT_VOIDED
ASSESSMENT_TYPES: Final = frozenset(
    {
        "http://adlnet.gov/expapi/activities/assessment",
        "https://w3id.org/xapi/openedx/activity/proctored-assessment",
        "https://w3id.org/xapi/openedx/activity/timed-assessment",
        "https://w3id.org/xapi/openedx/activity/practice-assessment",
    }
)
ATTEMPT_TYPE: Final = "http://adlnet.gov/expapi/activities/attempt"
COURSE_TYPES: Final = frozenset(
    {
        "http://adlnet.gov/expapi/activities/course",
        "http://id.tincanapi.com/activitytype/lms/course",
    }
)
ATTEMPT_ID_EXTENSION: Final = "http://id.tincanapi.com/extension/attempt-id"

STARTED: Final = EventType.ATTEMPT_STARTED
SUBMITTED: Final = EventType.ATTEMPT_SUBMITTED
GRADED: Final = EventType.ATTEMPT_GRADED
# verb IRI -> canonical type; None: submitted, or graded when the statement has a score.
VERB_TYPES: Final[Mapping[str, str | None]] = {
    ADL_VERBS + "attempted": STARTED,
    ADL_VERBS + "initialized": STARTED,
    ADL_VERBS + "launched": STARTED,
    "http://activitystrea.ms/schema/1.0/start": STARTED,  # Moodle's quiz attempt_started
    ADL_VERBS + "completed": None,
    ADL_VERBS + "passed": None,
    ADL_VERBS + "failed": None,
    ADL_VERBS + "scored": None,
    ADL_VERBS + "terminated": SUBMITTED,
    ADL_VERBS + "answered": "edu.assessment.item.completed",
    ADL_VERBS + "suspended": "edu.assessment.attempt.paused",
    ADL_VERBS + "resumed": "edu.assessment.attempt.resumed",
    VOIDED: VOIDED_TYPE,
}
ITEM_VERBS: Final = frozenset({ADL_VERBS + "answered"})

TOP_LEVEL: Final = frozenset(
    {
        "id",
        "actor",
        "verb",
        "object",
        "result",
        "context",
        "timestamp",
        "stored",
        "authority",
        "version",
        "attachments",
    }
)
# A SubStatement has no id, stored, version or authority of its own.
SUB_STATEMENT: Final = TOP_LEVEL - {"id", "stored", "version", "authority"} | {"objectType"}
IFIS: Final = ("mbox", "mbox_sha1sum", "openid", "account")
_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_IRI: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s]+\Z")
_SHA1: Final = re.compile(r"[0-9a-fA-F]{40}\Z")
_TIMESTAMP: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?\Z"
)
_DURATION: Final = re.compile(
    r"P(?=\d|T\d)(\d+(\.\d+)?Y)?(\d+(\.\d+)?M)?(\d+(\.\d+)?W)?(\d+(\.\d+)?D)?"
    r"(T(?=\d)(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?\Z"
)
_VERSION: Final = re.compile(r"1\.0(\.\d+)?\Z")


# --- the request ----------------------------------------------------------------------------


def check_version(headers: Mapping[str, str]) -> None:
    """X-Experience-API-Version is required on every statements request: 1.0 or 1.0.x (the
    spec's 1.0.3 LRS) or 2.0.0; anything else is a 400, as the spec says."""
    version = headers.get(VERSION_HEADER, "").strip()
    if not version:
        raise MalformedPayload("the X-Experience-API-Version header is required (1.0.3)")
    if not (_VERSION.match(version) or version == "2.0.0"):
        raise MalformedPayload(
            f"X-Experience-API-Version {version[:20]!r} is not supported: send 1.0.3 "
            f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
        )


def decode(inbound: Inbound) -> list[dict[str, Any]]:
    """The statements of a request, each with its id, or MalformedPayload naming every problem.

    A PUT carries one statement, its id in `statementId`; a POST one statement or an array.
    """
    if inbound.media_type == MULTIPART:
        raise MalformedPayload(
            "statements with attachments sent as multipart/mixed parts are not accepted: this "
            "gateway stores no files; reference each attachment by its fileUrl and send the "
            "statements as application/json"
        )
    if inbound.media_type != JSON:
        raise UnsupportedMediaType(
            f"statements are sent as {JSON}, not {inbound.media_type or 'no content type'!r}"
        )
    try:
        body = loads_json(inbound.body)
    except InvalidJson as error:
        raise MalformedPayload(f"the body is not JSON: {error}") from None
    if inbound.method == "PUT":
        return [_put_statement(body, inbound.query.get("statementId", ""))]
    if isinstance(body, dict):
        statements, pointers = [body], [""]
    elif isinstance(body, list) and body:
        statements, pointers = body, [f"/{i}" for i in range(len(body))]
    else:
        raise MalformedPayload("the body must be a statement or a non-empty array of statements")
    errors: list[FieldError] = []
    for statement, pointer in zip(statements, pointers, strict=True):
        errors += statement_errors(statement, pointer)
    if not errors:
        errors += _repeated_ids(statements, pointers)
    if errors:
        raise MalformedPayload(f"not a valid xAPI statement: {errors[0].message}", tuple(errors))
    return [_with_id(statement) for statement in statements]


def _put_statement(body: Any, statement_id: str) -> dict[str, Any]:
    if not _UUID.match(statement_id):
        raise MalformedPayload("PUT statements needs the statementId parameter (a UUID)")
    errors = statement_errors(body, "")
    if not errors and "id" in body and body["id"].lower() != statement_id.lower():
        errors = [FieldError("/id", "the statement's id differs from the statementId parameter")]
    if errors:
        raise MalformedPayload(f"not a valid xAPI statement: {errors[0].message}", tuple(errors))
    return {**body, "id": body.get("id", statement_id)}


def _with_id(statement: dict[str, Any]) -> dict[str, Any]:
    """The statement with an id: its own, else a UUID derived from its content. Derived, not
    random: a client that re-sends a statement without id (its first answer lost) sends the
    same statement, which gets the same id and is published once."""
    if "id" in statement:
        return statement
    return {"id": str(uuid.uuid5(ID_NAMESPACE, content_digest(statement))), **statement}


def _repeated_ids(statements: Sequence[Any], pointers: Sequence[str]) -> list[FieldError]:
    """One batch must not hold one id twice (which one would the ids answered name?)."""
    seen: set[str] = set()
    errors = []
    for statement, pointer in zip(statements, pointers, strict=True):
        given = statement.get("id")
        if isinstance(given, str):
            if given.lower() in seen:
                errors.append(FieldError(pointer + "/id", "this id is in the batch twice"))
            seen.add(given.lower())
    return errors


def split(statements: Sequence[dict[str, Any]]) -> list[Item]:
    """One item per statement, identified by its id."""
    many = len(statements) > 1
    return [
        Item(statement, STATEMENT_SCHEMA, f"/{i}" if many else "", statement["id"])
        for i, statement in enumerate(statements)
    ]


def render_error(error: GatewayError) -> Reply:
    """problem+json, with the X-Experience-API-Version every LRS answer carries."""
    reply = problem_reply(error)
    headers = {**reply.headers, "x-experience-api-version": VERSION}
    if isinstance(error, Unauthorized):
        headers["www-authenticate"] = WWW_AUTHENTICATE
    return Reply(reply.status, reply.body, reply.media_type, headers)


# --- what the spec refuses ------------------------------------------------------------------


def statement_errors(  # noqa: PLR0912  # one check per property the spec defines
    statement: Any, at: str, *, sub: bool = False
) -> list[FieldError]:
    """What makes `statement` one the spec refuses (empty: a valid statement)."""
    if not isinstance(statement, dict):
        return [FieldError(at, "a statement is a JSON object")]
    errors = []
    allowed = SUB_STATEMENT if sub else TOP_LEVEL
    for key in statement:
        if key not in allowed:
            errors.append(FieldError(f"{at}/{_escape(key)}", f"unknown property {key[:40]!r}"))
    for key in ("actor", "verb", "object"):
        if key not in statement:
            errors.append(FieldError(at, f"{key!r} is required"))
    if "id" in statement and not _is_uuid(statement["id"]):
        errors.append(FieldError(f"{at}/id", "the id must be a UUID"))
    if "actor" in statement:
        errors += _agent_errors(statement["actor"], f"{at}/actor")
    if "verb" in statement:
        errors += _verb_errors(statement["verb"], f"{at}/verb")
    if "object" in statement:
        errors += _object_errors(statement["object"], f"{at}/object", sub=sub)
    if "result" in statement:
        errors += _result_errors(statement["result"], f"{at}/result")
    if "context" in statement:
        errors += _context_errors(statement["context"], f"{at}/context")
    for key in ("timestamp", "stored"):
        if key in statement and not _is_timestamp(statement[key]):
            errors.append(FieldError(f"{at}/{key}", f"{key} must be an ISO 8601 date and time"))
    if "version" in statement and not (
        isinstance(statement["version"], str) and _VERSION.match(statement["version"])
    ):
        errors.append(FieldError(f"{at}/version", "version must be 1.0 or 1.0.x"))
    if "authority" in statement:
        errors += _agent_errors(statement["authority"], f"{at}/authority")
    if "attachments" in statement:
        errors += _attachment_errors(statement["attachments"], f"{at}/attachments")
    verb = statement.get("verb")
    if isinstance(verb, dict) and verb.get("id") == VOIDED:
        target = statement.get("object")
        if not (isinstance(target, dict) and target.get("objectType") == "StatementRef"):
            errors.append(
                FieldError(f"{at}/object", "a voiding statement's object is a StatementRef")
            )
    return errors


def _agent_errors(agent: Any, at: str) -> list[FieldError]:  # noqa: PLR0912  # per property
    if not isinstance(agent, dict):
        return [FieldError(at, "an agent or group is a JSON object")]
    errors = []
    kind = agent.get("objectType", "Agent")
    if kind not in ("Agent", "Group"):
        errors.append(FieldError(f"{at}/objectType", "objectType must be Agent or Group"))
    given = [key for key in IFIS if key in agent]
    members = agent.get("member")
    anonymous_group = kind == "Group" and not given and isinstance(members, list) and members
    if len(given) != 1 and not anonymous_group:
        errors.append(
            FieldError(
                at,
                f"an {'agent' if kind != 'Group' else 'identified group'} has exactly one "
                f"inverse functional identifier (mbox, mbox_sha1sum, openid, account), "
                f"not {len(given)}",
            )
        )
    mbox = agent.get("mbox")
    if "mbox" in agent and not (
        isinstance(mbox, str) and mbox.startswith("mailto:") and "@" in mbox
    ):
        errors.append(FieldError(f"{at}/mbox", "mbox must be a mailto: IRI"))
    if "mbox_sha1sum" in agent and not (
        isinstance(agent["mbox_sha1sum"], str) and _SHA1.match(agent["mbox_sha1sum"])
    ):
        errors.append(FieldError(f"{at}/mbox_sha1sum", "mbox_sha1sum must be 40 hex digits"))
    if "openid" in agent and not _is_iri(agent["openid"]):
        errors.append(FieldError(f"{at}/openid", "openid must be a URI"))
    if "account" in agent:
        account = agent["account"]
        if not (
            isinstance(account, dict)
            and _is_iri(account.get("homePage"))
            and isinstance(account.get("name"), str)
            and account["name"]
        ):
            errors.append(FieldError(f"{at}/account", "an account has a homePage IRL and a name"))
    if "name" in agent and not isinstance(agent["name"], str):
        errors.append(FieldError(f"{at}/name", "name must be a string"))
    if "member" in agent:
        if kind != "Group" or not isinstance(members, list):
            errors.append(FieldError(f"{at}/member", "member is an array, of a Group only"))
        else:
            for i, member in enumerate(members):
                errors += _agent_errors(member, f"{at}/member/{i}")
                if isinstance(member, dict) and member.get("objectType") == "Group":
                    errors.append(FieldError(f"{at}/member/{i}", "a group's member is an agent"))
    return errors


def _verb_errors(verb: Any, at: str) -> list[FieldError]:
    if not isinstance(verb, dict):
        return [FieldError(at, "a verb is a JSON object")]
    errors = []
    if not _is_iri(verb.get("id")):
        errors.append(FieldError(f"{at}/id", "the verb's id must be an IRI"))
    if "display" in verb and not _is_language_map(verb["display"]):
        errors.append(FieldError(f"{at}/display", "display must be a language map"))
    return errors


def _object_errors(target: Any, at: str, *, sub: bool) -> list[FieldError]:
    if not isinstance(target, dict):
        return [FieldError(at, "an object is a JSON object")]
    kind = target.get("objectType", "Activity")
    if kind == "Activity":
        errors = (
            []
            if _is_iri(target.get("id"))
            else [FieldError(f"{at}/id", "an activity's id must be an IRI")]
        )
        definition = target.get("definition")
        if definition is not None and not isinstance(definition, dict):
            errors.append(FieldError(f"{at}/definition", "a definition is a JSON object"))
        return errors
    if kind in ("Agent", "Group"):
        return _agent_errors(target, at)
    if kind == "StatementRef":
        return (
            []
            if _is_uuid(target.get("id"))
            else [FieldError(f"{at}/id", "a StatementRef's id must be a UUID")]
        )
    if kind == "SubStatement" and not sub:
        return statement_errors(target, at, sub=True)
    return [FieldError(f"{at}/objectType", f"objectType {str(kind)[:40]!r} is not allowed here")]


def _result_errors(result: Any, at: str) -> list[FieldError]:
    if not isinstance(result, dict):
        return [FieldError(at, "a result is a JSON object")]
    errors = []
    for key in ("success", "completion"):
        if key in result and not isinstance(result[key], bool):
            errors.append(FieldError(f"{at}/{key}", f"{key} must be true or false"))
    if "response" in result and not isinstance(result["response"], str):
        errors.append(FieldError(f"{at}/response", "response must be a string"))
    if "duration" in result and not (
        isinstance(result["duration"], str) and _DURATION.match(result["duration"])
    ):
        errors.append(FieldError(f"{at}/duration", "duration must be an ISO 8601 duration"))
    if "extensions" in result and not isinstance(result["extensions"], dict):
        errors.append(FieldError(f"{at}/extensions", "extensions is a JSON object"))
    if "score" in result:
        errors += _score_errors(result["score"], f"{at}/score")
    return errors


def _score_errors(score: Any, at: str) -> list[FieldError]:
    if not isinstance(score, dict):
        return [FieldError(at, "a score is a JSON object")]
    errors = []
    for key in score:
        value = score[key]
        if key not in ("scaled", "raw", "min", "max"):
            errors.append(FieldError(f"{at}/{_escape(key)}", f"unknown property {key[:40]!r}"))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.append(FieldError(f"{at}/{key}", f"{key} must be a number"))
    if errors:
        return errors
    scaled, raw = score.get("scaled"), score.get("raw")
    low, high = score.get("min"), score.get("max")
    if scaled is not None and not -1 <= scaled <= 1:
        errors.append(FieldError(f"{at}/scaled", "scaled must be between -1 and 1"))
    if low is not None and high is not None and not low < high:
        errors.append(FieldError(f"{at}/max", "max must be greater than min"))
    if raw is not None and low is not None and raw < low:
        errors.append(FieldError(f"{at}/raw", "raw must not be less than min"))
    if raw is not None and high is not None and raw > high:
        errors.append(FieldError(f"{at}/raw", "raw must not be greater than max"))
    return errors


def _context_errors(context: Any, at: str) -> list[FieldError]:
    if not isinstance(context, dict):
        return [FieldError(at, "a context is a JSON object")]
    errors = []
    if "registration" in context and not _is_uuid(context["registration"]):
        errors.append(FieldError(f"{at}/registration", "registration must be a UUID"))
    for key in ("instructor", "team"):
        if key in context:
            errors += _agent_errors(context[key], f"{at}/{key}")
    activities = context.get("contextActivities")
    if "contextActivities" in context and not isinstance(activities, dict):
        errors.append(FieldError(f"{at}/contextActivities", "contextActivities is a JSON object"))
    elif isinstance(activities, dict):
        for key, value in activities.items():
            where = f"{at}/contextActivities/{_escape(key)}"
            if key not in ("parent", "grouping", "category", "other"):
                errors.append(FieldError(where, f"unknown context activity type {key[:40]!r}"))
                continue
            for i, activity in enumerate(value if isinstance(value, list) else [value]):
                errors += _object_errors(
                    activity, f"{where}/{i}" if isinstance(value, list) else where, sub=True
                )
    if "extensions" in context and not isinstance(context["extensions"], dict):
        errors.append(FieldError(f"{at}/extensions", "extensions is a JSON object"))
    if "statement" in context:
        ref = context["statement"]
        if not (
            isinstance(ref, dict)
            and ref.get("objectType") == "StatementRef"
            and _is_uuid(ref.get("id"))
        ):
            errors.append(FieldError(f"{at}/statement", "context.statement is a StatementRef"))
    return errors


def _attachment_errors(attachments: Any, at: str) -> list[FieldError]:
    if not isinstance(attachments, list):
        return [FieldError(at, "attachments is an array")]
    errors = []
    for i, attachment in enumerate(attachments):
        where = f"{at}/{i}"
        if not isinstance(attachment, dict):
            errors.append(FieldError(where, "an attachment is a JSON object"))
        elif not _is_iri(attachment.get("fileUrl")):
            # Without a fileUrl its content would come as a multipart part, which is not kept.
            errors.append(
                FieldError(
                    where,
                    "an attachment without fileUrl needs its content in a multipart part: "
                    "this gateway stores no files; reference it by fileUrl",
                )
            )
    return errors


def _is_uuid(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID.match(value))


def _is_iri(value: Any) -> bool:
    return isinstance(value, str) and bool(_IRI.match(value))


def _is_language_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_timestamp(value: Any) -> bool:
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# --- the canonical record -------------------------------------------------------------------


def normalize(item: Item, ctx: NormalizeContext) -> list[CanonicalEvent]:
    """One canonical record per statement (docs/vendors/xapi.md has the table)."""
    statement: dict[str, Any] = item.payload
    verb_id: str = statement["verb"]["id"]
    target: dict[str, Any] = statement["object"]
    result = statement.get("result") or {}
    context = statement.get("context") or {}
    activities = _context_activities(context)
    kind = VERB_TYPES.get(verb_id, "edu.activity.generic")
    if kind is None:
        kind = GRADED if isinstance(result.get("score"), dict) else SUBMITTED
    is_activity = target.get("objectType", "Activity") == "Activity"
    item_ref = assessment = None
    if is_activity and verb_id in ITEM_VERBS:
        item_ref = _activity_ref(target)
        assessment = next(
            (_activity_ref(a) for a in activities if _type(a) in ASSESSMENT_TYPES), None
        )
    elif is_activity:
        assessment = _activity_ref(target)
    course = next((_activity_ref(a) for a in activities if _type(a) in COURSE_TYPES), None)
    attempt = _attempt(context, activities, result if item_ref is None else {})
    score = _score(result.get("score"))
    voided = target.get("id") if kind == VOIDED_TYPE else None
    data = compact(
        {
            "action": _action(verb_id),
            "learner": _learner(statement["actor"]),
            "assessment": assessment,
            "item": item_ref,
            "attempt": attempt,
            "score": score,
            "course": course,
            "vendor": compact(
                {
                    "name": NAME,
                    "event_type": verb_id,
                    "event_id": statement["id"],
                    "object_id": target.get("id") if isinstance(target.get("id"), str) else None,
                    "object_type": target.get("objectType", "Activity"),
                    "voided_statement_id": voided,
                    "registration": context.get("registration"),
                    "success": result.get("success"),
                    "completion": result.get("completion"),
                    "response": result.get("response"),
                    "platform": context.get("platform"),
                }
            ),
        }
    )
    subject = voided or _first(attempt, assessment, item_ref) or data["vendor"].get("object_id")
    when = statement.get("timestamp") or statement.get("stored")
    moment = normalize_time(when, "/timestamp") if when else ctx.received
    return [CanonicalEvent(kind, moment, statement["id"], data, subject=subject)]


def _action(verb_id: str) -> str:
    """The verb's last IRI segment in snake_case (`.../verbs/answered` is `answered`)."""
    last = re.split(r"[/#]", verb_id.rstrip("/#"))[-1] or verb_id
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", last)
    return re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_").lower() or "unknown"


def _learner(actor: Mapping[str, Any]) -> dict[str, Any] | None:
    """The actor's inverse functional identifier as the learner's id. An email is never an id:
    `mbox` becomes its SHA-1 (what `mbox_sha1sum` carries, so both forms join), the address
    itself goes to `email`, which the tenant's privacy policy keeps, pseudonymizes or drops."""
    name = actor.get("name")
    if "account" in actor:
        account = actor["account"]
        found = {"id": account["name"], "type": "account", "home_page": account["homePage"]}
    elif "mbox" in actor:
        mbox: str = actor["mbox"]
        digest = hashlib.sha1(mbox.encode("utf-8"), usedforsecurity=False).hexdigest()
        found = {"id": digest, "type": "mbox_sha1sum", "email": mbox.removeprefix("mailto:")}
    elif "mbox_sha1sum" in actor:
        found = {"id": actor["mbox_sha1sum"].lower(), "type": "mbox_sha1sum"}
    elif "openid" in actor:
        found = {"id": actor["openid"], "type": "openid"}
    else:
        return None  # an anonymous group names no one learner
    return compact({**found, "name": name if isinstance(name, str) else None})


def _context_activities(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    found = []
    activities = context.get("contextActivities") or {}
    for key in ("parent", "grouping", "other", "category"):
        value = activities.get(key)
        for activity in value if isinstance(value, list) else [value]:
            if isinstance(activity, dict) and isinstance(activity.get("id"), str):
                found.append(activity)
    return found


def _type(activity: Mapping[str, Any]) -> Any:
    definition = activity.get("definition")
    return definition.get("type") if isinstance(definition, dict) else None


def _activity_ref(activity: Mapping[str, Any]) -> dict[str, Any]:
    definition = activity.get("definition")
    definition = definition if isinstance(definition, dict) else {}
    names = definition.get("name")
    name = next(iter(names.values()), None) if isinstance(names, dict) and names else None
    kind = definition.get("type")
    return compact(
        {
            "id": activity["id"],
            "type": kind if isinstance(kind, str) else None,
            "name": name if isinstance(name, str) else None,
        }
    )


def _attempt(
    context: Mapping[str, Any], activities: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The registration, else an attempt activity of the context (Moodle, Open edX)."""
    activity = next((a for a in activities if _type(a) == ATTEMPT_TYPE), None)
    attempt_id = context.get("registration") or (activity or {}).get("id")
    if not isinstance(attempt_id, str):
        return None
    count = (context.get("extensions") or {}).get(ATTEMPT_ID_EXTENSION)
    if count is None and activity is not None:
        definition = activity.get("definition")
        extensions = definition.get("extensions") if isinstance(definition, dict) else None
        count = extensions.get(ATTEMPT_ID_EXTENSION) if isinstance(extensions, dict) else None
    duration = result.get("duration")
    return compact(
        {
            "id": attempt_id,
            "count": count
            if isinstance(count, int | float) and not isinstance(count, bool)
            else None,
            "duration": duration if isinstance(duration, str) else None,
        }
    )


def _score(score: Any) -> dict[str, Any] | None:
    if not isinstance(score, dict) or not score:
        return None
    return compact(
        {
            "given": score.get("raw"),
            "max": score.get("max"),
            "min": score.get("min"),
            "scaled": score.get("scaled"),
        }
    )


def _first(*refs: Mapping[str, Any] | None) -> str | None:
    return next((ref["id"] for ref in refs if ref is not None), None)


def describe_statement(statement: Mapping[str, Any]) -> bytes:
    """The statement as compared for a re-sent id: what the LRS sets itself left out."""
    kept = {k: v for k, v in statement.items() if k not in ("stored", "authority", "version")}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)
