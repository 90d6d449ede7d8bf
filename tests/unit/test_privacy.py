"""The PII policy: what a consumer of the canonical or dead-letter topic gets of a learner's name,
email and username under `keep`, `pseudonymize` and `drop`, and how the policy is configured."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import orjson
import pytest

from gateway.deadletter import DeadLetter
from gateway.errors import ConfigError
from gateway.privacy import REMOVED, Privacy, pseudonym
from gateway.settings import Tenant, TenantPrivacy, load_settings

KEY = b"k" * 32
EMAIL, NAME, USER = "jane.doe@example.edu", "Jane Doe", "jdoe42"


def privacy(policy: str, key: bytes = KEY) -> Privacy:
    return Privacy([Tenant("t", privacy=TenantPrivacy(policy, key))])


def pearson_message() -> dict[str, Any]:
    actor = {"id": "7777777", "type": "user", "firstName": "Jane", "lastName": "Doe"}
    actor |= {"emailAddress": EMAIL, "userName": USER}
    return {"MESSAGE-ID": "m1", "PAYLOAD": {"actor": actor, "object": {"examId": 1}}}


def caliper_event() -> dict[str, Any]:
    person: dict[str, Any] = {"id": "https://example.edu/users/554433", "type": "Person"}
    person["name"] = NAME
    person["extensions"] = {"bb:user.email": EMAIL}
    person["otherIdentifiers"] = [
        {"type": "SystemIdentifier", "identifier": EMAIL, "identifierType": "EmailAddress"},
        {"type": "SystemIdentifier", "identifier": "lti-9", "identifierType": "LtiUserId"},
    ]
    return {"actor": person, "object": {"id": "a1", "type": "Assessment", "name": "Quiz One"}}


def record(vendor: str, original: Any) -> dict[str, Any]:
    data = {"learner": {"id": "u1", "name": NAME}, "assessment": {"id": "a1", "name": "Quiz One"}}
    return {"id": "r1", "tenant": "t", "vendor": vendor, "data": {**data, "original": original}}


def text(value: Any) -> str:
    return orjson.dumps(value).decode()


@pytest.mark.parametrize(
    ("vendor", "original"), [("pearson", pearson_message()), ("caliper", caliper_event())]
)
def test_drop_leaves_no_name_email_or_username_but_every_id(vendor: str, original: Any) -> None:
    out = privacy("drop").canonical(record(vendor, original))
    for personal in (EMAIL, NAME, USER, '"Jane"', '"Doe"'):
        assert personal not in text(out)
    assert out["data"]["learner"] == {"id": "u1"}
    assert out["data"]["assessment"]["name"] == "Quiz One"  # not a person's name
    assert out["id"] == "r1"
    ids = {"pearson": ["7777777"], "caliper": ["users/554433", '"lti-9"']}[vendor]
    assert all(learner_id in text(out) for learner_id in ids)  # ids are how records join


def test_pseudonyms_are_stable_keyed_and_join_across_fields_and_vendors() -> None:
    policy = privacy("pseudonymize")
    pearson = policy.canonical(record("pearson", pearson_message()))
    caliper = policy.canonical(record("caliper", caliper_event()))
    email = pseudonym(KEY, EMAIL)
    assert email.startswith("pseudo:")
    assert len(email) == len("pseudo:") + 32
    assert pearson["data"]["original"]["PAYLOAD"]["actor"]["emailAddress"] == email
    assert caliper["data"]["original"]["actor"]["extensions"]["bb:user.email"] == email
    assert caliper["data"]["original"]["actor"]["otherIdentifiers"][0]["identifier"] == email
    # Case and surrounding blanks do not make another learner.
    assert pseudonym(KEY, "  Jane.Doe@Example.EDU ") == email
    assert caliper["data"]["learner"]["name"] == pseudonym(KEY, NAME)
    assert pseudonym(b"another key of 32 bytes........", EMAIL) != email
    for personal in (EMAIL, NAME, USER):
        assert personal not in text(pearson) + text(caliper)


def test_a_pseudonym_is_not_pseudonymized_again_so_replays_join() -> None:
    once = privacy("pseudonymize").canonical(record("pearson", pearson_message()))
    twice = privacy("pseudonymize").canonical(once)
    assert twice == once


def test_keep_changes_nothing() -> None:
    original = record("pearson", pearson_message())
    assert privacy("keep").canonical(original) is original


def test_a_record_without_personal_data_is_passed_through_untouched() -> None:
    plain = {"tenant": "t", "vendor": "canvas", "data": {"learner": {"id": "u1"}, "vendor": {}}}
    assert privacy("drop").canonical(plain) is plain


def test_an_unknown_tenant_gets_drop() -> None:
    out = Privacy([]).canonical({**record("pearson", pearson_message()), "tenant": "nobody"})
    assert EMAIL not in text(out)


def dead_letter(**fields: Any) -> DeadLetter:
    return DeadLetter.from_dict(
        {"tenant": "t", "vendor": "pearson", "message": "", "errors": [], **fields}
    )


def test_dead_letter_original_and_the_error_messages_quoting_it() -> None:
    letter = dead_letter(
        original=pearson_message(),
        message=f"not a valid pearson message: {EMAIL!r} is not of type 'integer'",
        errors=[{"path": "/PAYLOAD/actor/userName", "message": f"{USER!r} is too long"}],
    )
    out = privacy("drop").dead_letter(letter).to_dict()
    assert EMAIL not in text(out)
    assert USER not in text(out)
    assert out["original"]["PAYLOAD"]["actor"] == {"id": "7777777", "type": "user"}
    assert out["message"] == f"not a valid pearson message: '{REMOVED}' is not of type 'integer'"
    assert out["errors"][0]["path"] == "/PAYLOAD/actor/userName"


def form_letter(body: str) -> DeadLetter:
    media = "application/x-www-form-urlencoded"
    return dead_letter(
        original_body=body, original_body_encoding="utf-8", original_media_type=media
    )


def test_a_raw_form_body_with_json_inside_is_scrubbed_and_kept_a_form() -> None:
    payload = text(pearson_message()["PAYLOAD"])
    body = urlencode({"MESSAGE-ID": "m1", "PAYLOAD": payload, "userName": USER})
    out = privacy("pseudonymize").dead_letter(form_letter(body)).to_dict()["original_body"]
    fields = parse_qs(out)
    assert fields["MESSAGE-ID"] == ["m1"]
    assert fields["userName"] == [pseudonym(KEY, USER)]
    actor = orjson.loads(fields["PAYLOAD"][0])["actor"]
    assert actor["emailAddress"] == pseudonym(KEY, EMAIL)
    assert actor["id"] == "7777777"


def test_a_body_without_personal_data_is_kept_byte_for_byte() -> None:
    body = "quiz_submission_events%5B%5D=page_blurred&x=1"
    assert privacy("drop").dead_letter(form_letter(body)).to_dict()["original_body"] == body


def test_a_body_that_is_not_json_loses_its_emails_and_personal_pairs() -> None:
    body = f'{{"actor": {{"id": "u1", "email": "{EMAIL}", "note": "mail {EMAIL}"}},, }}'
    letter = dead_letter(
        original_body=body, original_body_encoding="utf-8", original_media_type="application/json"
    )
    out = privacy("drop").dead_letter(letter).to_dict()["original_body"]
    assert EMAIL not in out
    assert '"id": "u1"' in out  # the rest stays as sent, for whoever fixes the sender


def test_a_base64_body_loses_its_emails() -> None:
    raw = b"\xff\xfe garbage " + EMAIL.encode() + b" \x00"
    letter = dead_letter(
        original_body=base64.b64encode(raw).decode(),
        original_body_encoding="base64",
        original_media_type="application/octet-stream",
    )
    out = base64.b64decode(privacy("drop").dead_letter(letter).to_dict()["original_body"])
    assert EMAIL.encode() not in out
    assert out.startswith(b"\xff\xfe garbage ")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


TENANT = "[[tenants]]\nname = '{name}'\n"


def test_the_default_policy_is_drop(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, TENANT.format(name="a")), environ={})
    assert settings.privacy.policy == "drop"
    assert settings.tenants[0].privacy == TenantPrivacy("drop")


def test_tenants_get_their_own_keys_from_the_shared_one(tmp_path: Path) -> None:
    text = "[privacy]\npolicy = 'pseudonymize'\nsecret_env = 'PSEUDO_KEY'\n"
    text += TENANT.format(name="a") + TENANT.format(name="b")
    settings = load_settings(write(tmp_path, text), environ={"PSEUDO_KEY": "s" * 32})
    a, b = (t.privacy for t in settings.tenants)
    assert a.policy == b.policy == "pseudonymize"
    assert a.key != b.key  # one learner's pseudonyms cannot be linked across tenants
    assert "s" * 32 not in repr(settings)


def test_a_tenant_overrides_the_default_with_a_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a-key-of-at-least-16-bytes\n")
    text = TENANT.format(name="a")
    text += f"[tenants.privacy]\npolicy = 'pseudonymize'\nsecret_file = '{key_file}'\n"
    text += TENANT.format(name="b") + "[tenants.privacy]\npolicy = 'keep'\n"
    settings = load_settings(write(tmp_path, text), environ={"GATEWAY_PRIVACY_POLICY": "drop"})
    a, b = (t.privacy for t in settings.tenants)
    assert (a.policy, a.key, b.policy) == ("pseudonymize", b"a-key-of-at-least-16-bytes", "keep")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[privacy]\npolicy = 'hide'\n", {}, "privacy.policy must be one of"),
        (
            "[privacy]\npolicy = 'pseudonymize'\n" + TENANT.format(name="a"),
            {},
            "pseudonymize needs a key",
        ),
        (
            "[privacy]\npolicy = 'pseudonymize'\nsecret_env = 'K'\n" + TENANT.format(name="a"),
            {},
            "environment variable 'K' (secret_env) is not set",
        ),
        (
            "[privacy]\npolicy = 'pseudonymize'\nsecret_env = 'K'\n" + TENANT.format(name="a"),
            {"K": "short"},
            "at least 16 bytes",
        ),
        (
            TENANT.format(name="a") + "[tenants.privacy]\npolicy = 'pseudonymize'\n"
            "secret_file = '/nonexistent/key'\n",
            {},
            "cannot be read",
        ),
        (TENANT.format(name="a") + "[tenants.privacy]\nmode = 'keep'\n", {}, "unknown setting"),
    ],
)
def test_a_bad_privacy_configuration_stops_start_up(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), environ=env)
    assert message in raised.value.message


def test_a_described_person_loses_its_name_whatever_its_type_is_spelled() -> None:
    for kind in ("Person", "http://purl.imsglobal.org/caliper/Person", "caliper:Person"):
        entity = {"id": "https://example.edu/users/1", "type": kind, "name": NAME}
        described = {"tenant": "t", "vendor": "caliper", "data": {"entity": entity}}
        assert privacy("drop").canonical(described)["data"]["entity"] == {
            "id": "https://example.edu/users/1",
            "type": kind,
        }


def test_messages_lose_quoted_short_names_but_keep_their_words() -> None:
    original = {"PAYLOAD": {"actor": {"id": "1", "firstName": "Li"}}}
    letter = dead_letter(original=original, message="'Li' is not valid: see List of rules")
    assert privacy("drop").dead_letter(letter).to_dict()["message"] == (
        f"'{REMOVED}' is not valid: see List of rules"
    )
