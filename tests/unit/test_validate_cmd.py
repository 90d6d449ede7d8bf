"""`gateway validate` as a vendor's developer runs it: a payload file in, no broker, no gateway.

Each vendor's reviewed golden output is what the gateway publishes for a fixture; `validate`
must print the same canonical records (stamped with the tenant it is given) and exit 0, and for
a bad payload name what would be dead-lettered or refused, where, and exit 1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson
import pytest

from tests.support.schemas import SCHEMAS

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CANONICAL = SCHEMAS.get("canonical/event.schema.json")
TENANT = "golden-tenant"  # the tenant the golden files were made with
CANVAS_PATH = "/api/v1/courses/101/quizzes/202/submissions/303/events"


def validate(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "validate", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def records(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """The canonical records printed on stdout (one JSON object per line), each schema-valid."""
    printed = [orjson.loads(line) for line in result.stdout.splitlines()]
    for record in printed:
        assert not CANONICAL.errors(record), record
    return printed


def unstamped(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its receive time (the one field that depends on when it ran)."""
    return {k: v for k, v in record.items() if k != "receivedat"}


def golden(vendor_dir: str, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = orjson.loads((FIXTURES / vendor_dir / name).read_bytes())
    return loaded


def pearson_form(delivery: str, tmp_path: Path) -> Path:
    """The url-encoded body of a Pearson delivery fixture (its PAYLOAD sent as a JSON string)."""
    fields = golden("pearson/in", delivery)["fields"]
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    path = tmp_path / delivery.replace(".json", ".form")
    path.write_text(urlencode(encoded))
    return path


def canvas_body(request: str, tmp_path: Path) -> tuple[Path, str, str]:
    """A Canvas request fixture's body as a file, its content type and the URL path it names."""
    fixture = golden("canvas/in", request)
    body = fixture["body"]
    path = tmp_path / request
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    ids = fixture["path"]
    url = "/api/v1/courses/{course_id}/quizzes/{quiz_id}/submissions/{id}/events".format(**ids)
    return path, fixture["content_type"], url


def test_a_good_caliper_envelope_prints_the_records_the_gateway_publishes() -> None:
    name = "ims/v1p2/caliperEnvelopeEventBatch.json"
    source = FIXTURES / "caliper/in/ims/v1p2/caliperEnvelopeEventBatch.json"
    result = validate(str(source), "--vendor", "caliper", "--tenant", TENANT)
    assert result.returncode == 0, result.stderr
    expected = golden("caliper/golden", name)["canonical"]
    assert [unstamped(r) for r in records(result)] == [unstamped(r) for r in expected]
    assert f"would answer 200: {len(expected)} canonical records, 0 dead letters" in result.stderr


def test_an_invalid_caliper_event_is_named_with_its_pointer_and_exits_1(tmp_path: Path) -> None:
    started = orjson.loads(
        (FIXTURES / "caliper/in/ims/v1p2/caliperEventAssessmentStarted.json").read_bytes()
    )
    broken = {k: v for k, v in started.items() if k != "actor"}
    envelope = {
        "sensor": "https://example.edu/sensors/1",
        "sendTime": "2018-11-15T10:15:01.000Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "data": [started, broken],
    }
    path = tmp_path / "envelope.json"
    path.write_bytes(orjson.dumps(envelope))
    result = validate(str(path), "--vendor", "caliper")
    assert result.returncode == 1
    assert len(records(result)) == 1  # the good event would still be published
    assert "dead letter (schema_violation) at /data/1" in result.stderr
    assert "actor" in result.stderr
    assert "would answer 200: 1 canonical record, 1 dead letter " in result.stderr


def test_a_body_that_is_not_json_would_be_refused_with_400(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"sensor": ')
    result = validate(str(path), "--vendor", "caliper")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "would be refused: HTTP 400 malformed_payload" in result.stderr


@pytest.mark.parametrize("vendor", ["caliper", "pearson"])
def test_a_body_over_a_safety_limit_would_be_refused_even_where_success_is_owed(
    vendor: str, tmp_path: Path
) -> None:
    path = tmp_path / "duplicate-keys.json"
    path.write_text('{"sensor": "a", "sensor": "b"}')
    media = "application/json" if vendor == "caliper" else "application/x-www-form-urlencoded"
    body = path.read_text() if vendor == "caliper" else "a=1" + "&a=1" * 10_001
    path.write_text(body)
    result = validate(str(path), "--vendor", vendor, "--content-type", media)
    assert result.returncode == 1
    assert "would be refused: HTTP 400 unsafe_payload" in result.stderr


def test_a_content_type_the_vendor_does_not_take_would_be_refused_with_415() -> None:
    source = FIXTURES / "caliper/in/ims/v1p2/caliperEnvelopeEventBatch.json"
    result = validate(str(source), "--vendor", "caliper", "--content-type", "text/plain")
    assert result.returncode == 1
    assert "would be refused: HTTP 415 unsupported_media_type" in result.stderr


@pytest.mark.parametrize("request_name", ["browser-json-batch.json", "rack-nested-form.json"])
def test_a_canvas_batch_gives_the_golden_records(request_name: str, tmp_path: Path) -> None:
    path, content_type, url = canvas_body(request_name, tmp_path)
    result = validate(
        str(path),
        "--vendor",
        "canvas",
        "--content-type",
        content_type,
        "--tenant",
        TENANT,
        "--path",
        url,
    )
    assert result.returncode == 0, result.stderr
    expected = golden("canvas/golden", request_name)["canonical"]
    assert [unstamped(r) for r in records(result)] == [unstamped(r) for r in expected]
    assert "would answer 204" in result.stderr


def test_canvas_events_without_a_type_are_dead_letters_at_their_index(tmp_path: Path) -> None:
    path, _, _ = canvas_body("unknown-types-and-odd-values.json", tmp_path)
    result = validate(str(path), "--vendor", "canvas", "--path", CANVAS_PATH)
    assert result.returncode == 1
    for where in golden("canvas/in", "unknown-types-and-odd-values.json")["deadletters"]:
        assert f"dead letter (schema_violation) at {where}:" in result.stderr
    assert {r["data"]["course"]["id"] for r in records(result)} == {"101"}


def test_a_path_that_is_not_the_vendors_route_is_a_usage_error(tmp_path: Path) -> None:
    path, _, _ = canvas_body("browser-json-batch.json", tmp_path)
    result = validate(str(path), "--vendor", "canvas", "--path", "/v1/caliper")
    assert result.returncode == 2
    assert "is not a canvas route" in result.stderr


def test_a_pearson_form_gives_the_golden_record(tmp_path: Path) -> None:
    form = pearson_form("seed-example.json", tmp_path)
    result = validate(str(form), "--vendor", "pearson", "--tenant", TENANT)
    assert result.returncode == 0, result.stderr
    expected = golden("pearson/golden", "seed-example.json")["canonical"]
    assert [unstamped(r) for r in records(result)] == [unstamped(r) for r in expected]
    assert "emailAddress" not in result.stdout


def test_a_pearson_schema_violation_names_the_pointers(tmp_path: Path) -> None:
    form = pearson_form("schema-violation-actor-without-id.json", tmp_path)
    result = validate(str(form), "--vendor", "pearson")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "dead letter (schema_violation)" in result.stderr
    assert "/PAYLOAD/actor" in result.stderr
    assert "/PAYLOAD/object/examId" in result.stderr


def test_inspera_webhooks_good_bad_and_a_subscription_check() -> None:
    webhooks = FIXTURES / "inspera/in/webhooks"
    good = validate(str(webhooks / "confirm-final-grades.json"), "--vendor", "inspera")
    assert good.returncode == 0, good.stderr
    assert [r["vendor"] for r in records(good)] == ["inspera"]

    bad = validate(str(webhooks / "bad-timestamp.json"), "--vendor", "inspera")
    assert bad.returncode == 1
    assert "dead letter (unmappable)" in bad.stderr
    assert "/timestamp: 'last tuesday'" in bad.stderr

    check = validate(str(webhooks / "subscription-validation.json"), "--vendor", "inspera")
    assert check.returncode == 0
    assert check.stdout == ""
    assert "0 canonical records, 0 dead letters" in check.stderr


def test_reads_the_payload_from_stdin() -> None:
    body = (FIXTURES / "inspera/in/webhooks/confirm-final-grades.json").read_bytes()
    result = validate("-", "--vendor", "inspera", stdin=body)
    assert result.returncode == 0, result.stderr
    assert len(records(result)) == 1


def caliper_envelope(**changes: Any) -> dict[str, Any]:
    """A valid Caliper envelope of one event, with `changes` to the envelope or (`event_*`)
    to its event."""
    event = orjson.loads(
        (FIXTURES / "caliper/in/ims/v1p2/caliperEventAssessmentStarted.json").read_bytes()
    )
    envelope = {
        "sensor": "https://example.edu/sensors/1",
        "sendTime": "2018-11-15T10:15:01.000Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "data": [event],
    }
    for key, value in changes.items():
        if key.startswith("event_"):
            event[key.removeprefix("event_")] = value
        else:
            envelope[key] = value
    return envelope


def field_lines(stderr: str) -> list[str]:
    """The lines that name a field (indented JSON pointers)."""
    return [line.strip() for line in stderr.splitlines() if line.startswith("  /")]


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        ({"sendTime": "yesterday"}, '/sendTime: "yesterday" is not an RFC 3339 date-time'),
        ({"event_eventTime": "2026-02-30T10:00:00Z"}, "/eventTime: "),
    ],
    ids=["envelope", "event"],
)
def test_an_invalid_date_says_what_is_expected_once(
    changes: dict[str, Any], line: str, tmp_path: Path
) -> None:
    path = tmp_path / "envelope.json"
    path.write_bytes(orjson.dumps(caliper_envelope(**changes)))
    result = validate(str(path), "--vendor", "caliper")
    assert result.returncode == 1
    (field,) = field_lines(result.stderr)  # one line per field
    assert field.startswith(line), result.stderr
    assert field.endswith("is not an RFC 3339 date-time"), result.stderr
    assert "[0-9]" not in result.stderr  # never the regular expression
    assert "anyOf" not in result.stderr


def test_a_pearson_date_says_what_is_expected(tmp_path: Path) -> None:
    fields = golden("pearson/in", "seed-example.json")["fields"]
    payload = dict(fields["PAYLOAD"])
    payload["eventDate"] = "last tuesday"
    form = tmp_path / "delivery.form"
    form.write_text(urlencode({**fields, "PAYLOAD": json.dumps(payload)}))
    result = validate(str(form), "--vendor", "pearson")
    assert result.returncode == 1
    (field,) = field_lines(result.stderr)
    assert field.startswith('/PAYLOAD/eventDate: "last tuesday" is not '), result.stderr
    assert "date-time" in field
    assert "[0-9]" not in result.stderr


def test_counts_are_said_in_the_singular_too(tmp_path: Path) -> None:
    path = tmp_path / "envelope.json"
    path.write_bytes(orjson.dumps(caliper_envelope()))
    result = validate(str(path), "--vendor", "caliper")
    assert result.returncode == 0, result.stderr
    assert "would answer 200: 1 canonical record, 0 dead letters " in result.stderr


@pytest.mark.parametrize("vendor", ["caliper", "canvas", "pearson", "inspera"])
@pytest.mark.parametrize("body", [b"", b"\n"], ids=["empty", "newline"])
def test_an_empty_body_says_so(vendor: str, body: bytes, tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_bytes(body)
    result = validate(str(path), "--vendor", vendor)
    assert result.stderr.splitlines()[0] == f"{path}: empty body", result.stderr
    assert "EOF while parsing" not in result.stderr
