"""The gateway's logs hold no secret and no learner's data: a real `gateway serve` (at debug level)
takes requests of every vendor, good and bad, full of tokens, signatures, a pre-signed URL, names
and emails, and its whole output (stdout and stderr) is then searched for every one of them.

A second test audits every gateway log this test session wrote before it (the other modules'
gateways: the shared one, the fault tests', the export tests'...) for the dev secrets, emails,
bearer headers and pre-signed URL signatures. It sees the logs of the modules that ran before
it (pytest runs modules in name order: caliper, canvas, delivery, faults, inspera...); the ones
that run after it are not audited (docs/security.md, "Logs").
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.canvas import QuizSubmission, stamped
from tests.support.gateway import Gateway, running_gateway, wait_for_log
from tests.support.http import FileServer
from tests.support.inspera import (
    FIXTURE_SECRET,
    export_finished,
    export_log,
    fresh_test_id,
    sign,
    signed_url,
)
from tests.support.pearson import delivery, form, fresh_exam_completed

TOKEN, PEARSON_KEY, INSPERA_SECRET = "dev-token", "dev-pearson-key!", "dev-inspera-secret"
DEV_SECRETS = [TOKEN, PEARSON_KEY, INSPERA_SECRET]
EMAIL, NAME = "audit.learner@example.edu", "Audrey Auditee"
PEARSON_ACTOR = fresh_exam_completed()["actor"]
_EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def audited(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"GATEWAY_LOGGING_LEVEL": "debug"}
    yield from running_gateway(broker, tmp_path_factory.mktemp("audit"), env)


def caliper_event(marker: str) -> dict[str, object]:
    learner: dict[str, object] = {"id": "https://example.edu/users/1", "type": "Person"}
    learner["name"] = NAME
    learner["extensions"] = {"email": EMAIL, "note": marker}
    return {
        "@context": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "id": f"urn:uuid:{uuid.uuid4()}",
        "type": "AssessmentEvent",
        "profile": "AssessmentProfile",
        "actor": learner,
        "action": "Started",
        "object": {"id": "https://example.edu/assess/1", "type": "Assessment"},
        "eventTime": "2026-11-26T10:00:00.000Z",
    }


async def send_every_kind_of_request(
    http: httpx.AsyncClient, files: FileServer
) -> tuple[list[str], str]:
    """Requests of every vendor; returns every secret and personal value they carried, and the
    test id of the Inspera export it had the gateway download."""
    marker = f"BODY-MARKER-{uuid.uuid4().hex}"
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    wrong_token = f"wrong-token-{uuid.uuid4().hex}"
    event = caliper_event(marker)
    envelope = {
        "sensor": "https://example.edu/sensors/1",
        "sendTime": "2026-11-26T10:00:01.000Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p2",
        "data": [event, {**event, "id": f"urn:uuid:{uuid.uuid4()}", "action": "Teleported"}],
    }
    body = orjson.dumps(envelope)
    assert (await http.post("/v1/caliper", content=body, headers={**JSON, **bearer})).is_success
    raw_key = {"Authorization": TOKEN}
    await http.post("/v1/caliper", content=body, headers={**JSON, **raw_key})
    wrong = {"Authorization": f"Bearer {wrong_token}"}
    assert (
        await http.post("/v1/caliper", content=body, headers={**JSON, **wrong})
    ).status_code == 401
    malformed = f'{{"data": [{{"email": "{EMAIL}", "name": "{NAME}", "x": "{marker}"'.encode()
    malformed_answer = await http.post("/v1/caliper", content=malformed, headers={**JSON, **bearer})
    assert malformed_answer.status_code == 400
    await http.get("/v1/caliper", headers=bearer)

    sub = QuizSubmission.fresh()
    events = [stamped("question_answered", 1, [{"quiz_question_id": "1", "answer": marker}])]
    canvas = orjson.dumps({"quiz_submission_events": events})
    in_query = await http.post(
        sub.events, params={"access_token": TOKEN}, content=canvas, headers=JSON
    )
    assert in_query.status_code == 204
    in_form = f"access_token={TOKEN}&quiz_submission_events[]=page_focused&x={EMAIL}"
    assert (await http.post(sub.events, content=in_form.encode(), headers=FORM)).status_code == 204
    await http.post(sub.events, content=b"{not json " + marker.encode(), headers={**JSON, **bearer})
    await http.get(sub.events, params={"access_token": TOKEN})
    await http.get(sub.events, params={"access_token": wrong_token})

    pearson = delivery(fresh_exam_completed())
    assert (await http.post("/v1/pearson/eventing", content=form(pearson), headers=FORM)).is_success
    forged = {**pearson, "AUTHORIZATION": pearson["AUTHORIZATION"][:-4] + "0000"}
    await http.post("/v1/pearson/eventing", content=form(forged), headers=FORM)
    poison = delivery(f'{{"actor": {{"emailAddress": "{EMAIL}", "x": "{marker}"')
    assert (await http.post("/v1/pearson/eventing", content=form(poison), headers=FORM)).is_success

    amz = f"AMZSIG{uuid.uuid4().hex}"
    finished = export_finished(signed_url(files, amz))
    webhook = orjson.dumps(finished)
    signature = sign(webhook)
    inspera = {**JSON, "X-Inspera-Signature": signature}
    assert (await http.post("/v1/inspera/webhooks", content=webhook, headers=inspera)).is_success
    refused_sig = f"AMZSIG{uuid.uuid4().hex}"
    elsewhere = export_finished(
        f"https://exports.evil.invalid/x.json?X-Amz-Signature={refused_sig}"
    )
    elsewhere_body = orjson.dumps(elsewhere)
    headers = {**JSON, "X-Inspera-Signature": sign(elsewhere_body)}
    await http.post("/v1/inspera/webhooks", content=elsewhere_body, headers=headers)
    bad = {**JSON, "X-Inspera-Signature": sign(webhook, "not-the-secret")}
    assert (
        await http.post("/v1/inspera/webhooks", content=webhook, headers=bad)
    ).status_code == 401
    invalid = f'{{"event": "x", "contextObjectId": {fresh_test_id()}, "email": "{EMAIL}"'.encode()
    headers = {**JSON, "X-Inspera-Signature": sign(invalid)}
    await http.post("/v1/inspera/webhooks", content=invalid, headers=headers)
    return [
        *DEV_SECRETS,
        wrong_token,
        marker,
        EMAIL,
        NAME,
        *(str(PEARSON_ACTOR[k]) for k in ("firstName", "lastName", "emailAddress", "userName")),
        pearson["AUTHORIZATION"].split("|")[2],
        poison["AUTHORIZATION"].split("|")[2],
        signature,
        amz,
        refused_sig,
        FIXTURE_SECRET.decode(),  # in the export's attachment URLs
    ], str(finished["contextObjectId"])


def found_in(log: bytes, secrets: list[str]) -> list[str]:
    return [secret for secret in secrets if secret.encode() in log]


async def test_no_secret_signature_url_email_or_body_reaches_the_log(audited: Gateway) -> None:
    with FileServer() as files:
        async with httpx.AsyncClient(base_url=audited.url, timeout=30) as http:
            secrets, test_id = await send_every_kind_of_request(http, files)
        # The export is downloaded and ingested in the background: its lines are logged too.
        await wait_for_log(audited, export_log("inspera_export_ingested", test_id))
    lines = audited.log_lines()
    assert sum(1 for line in lines if line.get("event") == "request") >= 15  # all were logged
    log = audited.log_path.read_bytes()
    assert found_in(log, secrets) == []
    assert _EMAIL.findall(log) == []
    assert b"Bearer" not in log
    assert b"X-Amz-Signature" not in log


def session_gateway_logs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return sorted(tmp_path_factory.getbasetemp().rglob("gateway-*.log"))


def test_no_gateway_log_of_this_session_holds_a_secret(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    leaks = []
    for path in session_gateway_logs(tmp_path_factory):
        log = path.read_bytes()
        for what in [*found_in(log, DEV_SECRETS), *map(bytes.decode, _EMAIL.findall(log))]:
            leaks.append(f"{path.name}: {what}")
        for marker in (b"Bearer ", b"X-Amz-Signature", b"X-Amz-Credential", FIXTURE_SECRET):
            if marker in log:
                leaks.append(f"{path.name}: {marker.decode()}")
    assert leaks == []
