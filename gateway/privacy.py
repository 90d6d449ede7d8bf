"""The per-tenant PII policy: learners' names, emails and usernames are kept, pseudonymized or
dropped in everything that leaves the gateway (canonical records, dead letters, raw bodies).

Personal fields are found by key, not by value: a fixed vocabulary of keys that only ever hold
a person's name, email or username (`emailAddress`, `email`, `firstName`, `lastName`,
`userName`, ...; compared case-insensitively, without `_`/`-`, on the last segment of a
namespaced key such as `bb:user.email` or `event_data[email]`), `name` of an object that is a
person (any object whose `type` says person/user, the canonical `learner`, or an object under a
key its vendor declares holds a person: `Vendor.person_keys`), and the `identifier` of a
`SystemIdentifier` (IMS's JSON-LD term) whose `identifierType` is `EmailAddress` or
`AccountUserName`. Ids are not personal fields here: they are how records are joined, and they
stay (docs/security.md says why, and what that leaves).

Pseudonyms are `pseudo:` + the first 32 hex digits of HMAC-SHA256(tenant key, value), the value
stripped and case-folded: stable, so that joins on them still work, and not reversible without
the key. A value that already is a pseudonym is left as it is, so that a dead letter scrubbed
once and replayed later gets the same pseudonyms as a record published at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

import orjson

from gateway.deadletter import ABSENT, DeadLetter
from gateway.errors import FieldError
from gateway.settings import PRIVACY_POLICIES, Tenant, TenantPrivacy
from gateway.vendors import registry
from gateway.vendors.base import Vendor

KEEP: Final = "keep"
PSEUDONYMIZE: Final = "pseudonymize"
DROP: Final = "drop"
assert set(PRIVACY_POLICIES) == {KEEP, PSEUDONYMIZE, DROP}  # noqa: S101  # one vocabulary

PREFIX: Final = "pseudo:"
REMOVED: Final = "[personal data removed]"
_PSEUDONYM: Final = re.compile(r"pseudo:[0-9a-f]{32}\Z")

# Keys that hold a person's name, email or username whatever object they are in (normalized:
# lower case, no `_` or `-`). `name` alone is not here: an assessment or a course has one too.
PERSONAL_KEYS: Final = frozenset(
    {
        "email",
        "emailaddress",
        "firstname",
        "lastname",
        "middlename",
        "givenname",
        "familyname",
        "fullname",
        "displayname",
        "sortablename",
        "username",
        "loginid",
        "mbox",  # a mailto: address (the Experience API's agents)
    }
)
# `type` values (JSON-LD terms or last IRI segments, lower case) of objects that are persons:
# their `name` is personal too.
PERSON_TYPES: Final = frozenset({"person", "user", "student", "learner", "candidate"})
# Objects that are persons by where they are, whatever their type says: the canonical `learner`,
# and in each vendor's payloads the keys it declares (`Vendor.person_keys`).
PERSON_KEYS: Final = frozenset({"learner"})
# SystemIdentifier types (IMS's JSON-LD vocabulary) whose `identifier` is an email or a username.
PERSONAL_IDENTIFIER_TYPES: Final = frozenset({"emailaddress", "accountusername"})

_MIN_BARE_MATCH: Final = 5
_KEY_SEGMENT: Final = re.compile(r"[^\[\].:/#]+")
_EMAIL: Final = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# `"key": "value"` in JSON-ish text that does not parse (a dead-lettered malformed body).
_JSON_PAIR: Final = re.compile(r'"([A-Za-z_:.\-]+)"(\s*:\s*)"((?:[^"\\]|\\.)*)"')


def normalized_key(key: str) -> str:
    """`bb:user.email_address` and `event_data[Email-Address]` are both `emailaddress`."""
    segments = _KEY_SEGMENT.findall(key)
    last = segments[-1] if segments else key
    return last.replace("_", "").replace("-", "").lower()


def is_personal_key(key: str) -> bool:
    """Whether values under `key` are names, emails or usernames wherever they appear."""
    return normalized_key(key) in PERSONAL_KEYS


def pseudonym(key: bytes, value: str) -> str:
    """The stable pseudonym of `value` under `key` (a pseudonym stays what it is)."""
    if _PSEUDONYM.match(value):
        return value
    text = unicodedata.normalize("NFC", value).strip().casefold()
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


class _Scrub:
    """One policy at work on one document; `found` maps every personal value it met to what
    replaced it, so that texts quoting them (schema error messages) can be cleaned too."""

    def __init__(self, policy: TenantPrivacy, person_keys: frozenset[str]) -> None:
        self.drop = policy.policy == DROP
        self.key = policy.key
        self.person_keys = person_keys
        self.found: dict[str, str] = {}

    def replace(self, value: Any) -> Any:
        """What a personal value becomes (only called when pseudonymizing)."""
        if value is None:
            return None
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        if not text:
            return value
        replaced = pseudonym(self.key, text)
        self.found[text] = replaced
        return replaced

    def note_dropped(self, value: Any) -> None:
        if isinstance(value, str) and value:
            self.found[value] = REMOVED

    def walk(self, node: Any, person: bool = False) -> Any:
        """`node` with its personal fields replaced; the very same object when it has none."""
        if isinstance(node, list):
            items = [self.walk(v) for v in node]
            return node if all(a is b for a, b in zip(items, node, strict=True)) else items
        if isinstance(node, str) and node[:1] in ("{", "["):
            # A document inside a string (a form field holding JSON, kept as sent when it does
            # not parse).
            return _scrub_body(self, "", node)
        if not isinstance(node, dict):
            return node
        person = person or _is_person(node)
        identifier = _is_personal_identifier(node)
        out: dict[str, Any] = {}
        changed = False
        for k, v in node.items():
            personal = isinstance(k, str) and (
                is_personal_key(k) or (person and k == "name") or (identifier and k == "identifier")
            )
            if personal and v is not None:
                changed = True
                if self.drop:
                    self.note_dropped(v)
                    continue
                out[k] = self.replace(v)
                continue
            walked = self.walk(v, person=isinstance(k, str) and k in self.person_keys)
            changed = changed or walked is not v
            out[k] = walked
        return out if changed else node

    def text(self, text: str) -> str:
        """A free text (an error message, an unparseable body) without the personal values
        already found, nor emails, nor `"personalKey": "..."` pairs."""
        for value in sorted(self.found, key=len, reverse=True):
            replacement = self.found[value]
            # Error messages quote values (repr or JSON); a short name unquoted ("Li") would
            # also match inside ordinary words.
            for quote in ("'", '"'):
                text = text.replace(f"{quote}{value}{quote}", f"{quote}{replacement}{quote}")
            if len(value) >= _MIN_BARE_MATCH:
                text = text.replace(value, replacement)

        def pair(match: re.Match[str]) -> str:
            # Whose `name` it is cannot be told without the structure: any is taken as personal.
            if not (is_personal_key(match.group(1)) or normalized_key(match.group(1)) == "name"):
                return match.group(0)
            value = REMOVED if self.drop else self.replace(match.group(3))
            return f'"{match.group(1)}"{match.group(2)}"{value}"'

        text = _JSON_PAIR.sub(pair, text)
        return _EMAIL.sub(lambda m: REMOVED if self.drop else str(self.replace(m.group(0))), text)


def _is_person(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    if not isinstance(kind, str):
        return False
    segments = _KEY_SEGMENT.findall(kind)  # a term, a prefixed term or an IRI
    return bool(segments) and segments[-1].lower() in PERSON_TYPES


def _is_personal_identifier(node: Mapping[str, Any]) -> bool:
    kind = node.get("identifierType")
    return isinstance(kind, str) and kind.lower() in PERSONAL_IDENTIFIER_TYPES


class Privacy:
    """The tenants' policies, applied to what the pipeline is about to publish."""

    def __init__(self, tenants: Sequence[Tenant], vendors: Iterable[Vendor] | None = None) -> None:
        """`vendors`: whose person keys apply to their records (default: the registry's)."""
        self._policies = {t.name: t.privacy for t in tenants}
        known = registry().values() if vendors is None else vendors
        self._person_keys = {vendor.name: PERSON_KEYS | vendor.person_keys for vendor in known}

    def policy(self, tenant: str) -> TenantPrivacy:
        """The tenant's policy; an unknown tenant gets the conservative default (drop)."""
        return self._policies.get(tenant) or TenantPrivacy()

    def _scrub(self, tenant: str, vendor: str) -> _Scrub | None:
        policy = self.policy(tenant)
        if policy.policy == KEEP:
            return None
        return _Scrub(policy, self._person_keys.get(vendor, PERSON_KEYS))

    def canonical(self, record: dict[str, Any]) -> dict[str, Any]:
        """A canonical record with its `data` (and `data.original`) under the tenant's policy."""
        scrub = self._scrub(record["tenant"], record["vendor"])
        if scrub is None:
            return record
        data = scrub.walk(record["data"])
        return record if data is record["data"] else {**record, "data": data}

    def dead_letter(self, letter: DeadLetter) -> DeadLetter:
        """A dead letter with `original`, `original_body` and the messages quoting them under
        the tenant's policy. A UTF-8 body is scrubbed as JSON, as a form (and JSON in its
        fields), else as text; a base64 one (not UTF-8) only for emails, on its bytes."""
        scrub = self._scrub(letter.tenant, letter.vendor)
        if scrub is None:
            return letter
        original = letter.original
        if original is not ABSENT:
            original = scrub.walk(original)
        body = letter.original_body
        if body is not None and letter.original_body_encoding == "base64":
            # latin-1 maps every byte to one character and back: only ASCII emails change.
            raw = base64.b64decode(body).decode("latin-1")
            body = base64.b64encode(scrub.text(raw).encode("latin-1")).decode()
        elif body is not None:
            body = _scrub_body(scrub, letter.original_media_type or "", body)
        return replace(
            letter,
            original=original,
            original_body=body,
            message=scrub.text(letter.message),
            errors=tuple(FieldError(e.path, scrub.text(e.message)) for e in letter.errors),
        )


def _scrub_body(scrub: _Scrub, media_type: str, text: str) -> str:
    """`text` itself when nothing personal is in it, else the scrubbed text."""
    if media_type == "application/x-www-form-urlencoded":
        return _scrub_form(scrub, text)
    parsed = _json(text)
    if parsed is not _NOT_JSON:
        walked = scrub.walk(parsed)
        return text if walked is parsed else orjson.dumps(walked).decode()
    scrubbed = scrub.text(text)
    return text if scrubbed == text else scrubbed


def _scrub_form(scrub: _Scrub, text: str) -> str:
    pairs = parse_qsl(text, keep_blank_values=True)
    kept: list[tuple[str, str]] = []
    changed = False
    for key, value in pairs:
        if is_personal_key(key) and value:
            changed = True
            if not scrub.drop:
                kept.append((key, str(scrub.replace(value))))
            continue
        new = _scrub_body(scrub, "", value)
        changed = changed or new is not value
        kept.append((key, new))
    return urlencode(kept) if changed else text


_NOT_JSON: Final = object()


def _json(text: str) -> Any:
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return _NOT_JSON
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _NOT_JSON
