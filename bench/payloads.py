"""Each vendor's typical request for the benchmark, with event ids unique per request.

Caliper and Canvas bodies are templates (`{{UNIQUE}}` is replaced per request by
bench/lua/unique.lua); Pearson deliveries must each be signed, so they are made ahead and sent
one line each by bench/lua/lines.lua.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

import orjson

from gateway.vendors.pearson.signature import aes_cmac_hex
from tests.support.caliper import IMS

LUA = Path(__file__).resolve().parent / "lua"
BEARER_JSON = ("Authorization: Bearer dev-token", "Content-Type: application/json")
PEARSON_TYPE = "pearson.ls.assessment.studentexam.completed"


@dataclass(frozen=True)
class Payload:
    """A vendor's typical request: a template with `{{UNIQUE}}` markers, or ready bodies."""

    name: str
    path: str
    headers: tuple[str, ...]
    events: int  # events per request
    template: str = ""
    lines: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return LUA / ("lines.lua" if self.lines else "unique.lua")

    def split(self, share: float) -> tuple[Payload, Payload]:
        """Two payloads whose ready bodies do not overlap (a warm-up and a measured run must not
        send the same delivery twice: the second copy would be a cheap duplicate)."""
        if not self.lines:
            return self, self  # templates are made unique per request by the script
        cut = int(len(self.lines) * share)
        return replace(self, lines=self.lines[:cut]), replace(self, lines=self.lines[cut:])

    def data(self) -> str:
        """What the wrk script reads: the template, or one body per line."""
        return "\n".join(self.lines) + "\n" if self.lines else self.template


def caliper() -> Payload:
    """The IMS 3-event batch envelope, each event id made unique per request."""
    envelope = orjson.loads((IMS / "v1p2" / "caliperEnvelopeEventBatch.json").read_bytes())
    for index, event in enumerate(envelope["data"]):
        event["id"] = f"urn:uuid:bench-{index}-{{{{UNIQUE}}}}"
    body = orjson.dumps(envelope).decode()
    return Payload("caliper 3-event envelope", "/v1/caliper", BEARER_JSON, 3, template=body)


def canvas() -> Payload:
    """A quiz page's batch of 5 events, as the Canvas browser posts it (JSON)."""
    unique = {"bench": "{{UNIQUE}}"}
    events = [
        {
            "client_timestamp": "2026-11-26T10:00:00Z",
            "event_type": "page_blurred",
            "event_data": unique,
        },
        {
            "client_timestamp": "2026-11-26T10:00:01Z",
            "event_type": "page_focused",
            "event_data": unique,
        },
        {
            "client_timestamp": "2026-11-26T10:00:02Z",
            "event_type": "question_viewed",
            "event_data": ["1", "2", "{{UNIQUE}}"],
        },
        {
            "client_timestamp": "2026-11-26T10:00:03Z",
            "event_type": "question_answered",
            "event_data": [{"quiz_question_id": "1", "answer": "{{UNIQUE}}"}],
        },
        {
            "client_timestamp": "2026-11-26T10:00:04Z",
            "event_type": "question_flagged",
            "event_data": {"flagged": True, "questionId": "2", "bench": "{{UNIQUE}}"},
        },
    ]
    body = orjson.dumps({"quiz_submission_events": events}).decode()
    path = "/api/v1/courses/101/quizzes/202/submissions/303/events"
    return Payload("canvas 5-event batch", path, BEARER_JSON, len(events), template=body)


def pearson(count: int) -> Payload:
    """`count` deliveries, each its own message, signed as LearningStudio signs them, now (the
    gateway refuses a signature older than `pearson.max_age_seconds`, 73 hours by default)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = []
    for n in range(count):
        payload = orjson.dumps(
            {
                "eventId": f"bench-{n}",
                "eventDate": "2026-11-26T10:00:00.000Z",
                "eventType": PEARSON_TYPE,
                "object": {
                    "id": f"pearson.ls.assessment.studentexam_{n}",
                    "type": "pearson.ls.assessment.studentexam",
                    "startTime": "2026-11-26T09:00:00.000Z",
                    "endTime": "2026-11-26T09:59:58.000Z",
                    "isLateSubmission": False,
                    "examId": 123456,
                    "isAutoGradingOn": True,
                    "isComplete": True,
                },
                "actor": {"id": str(7_000_000 + n), "type": "user"},
                "contexts": {
                    "course": {"id": "2022425", "title": "Bench 101", "nodes": ["402629"]},
                    "ep": {"id": "987654", "clientString": "epsamplestring"},
                },
            }
        ).decode()
        message_id = f"bench-message-{n}"
        signed = stamp + message_id + PEARSON_TYPE + "application/json" + payload
        fields = {
            "DELIVERY-ATTEMPT-ID": str(n),
            "MESSAGE-ID": message_id,
            "MESSAGE-TYPE": PEARSON_TYPE,
            "PAYLOAD-CONTENT-TYPE": "application/json",
            "PAYLOAD": payload,
            "AUTHORIZATION": f"dev-principal|{stamp}|{aes_cmac_hex('dev-pearson-key!', signed)}",
        }
        lines.append(urlencode(fields))
    form = ("Content-Type: application/x-www-form-urlencoded",)
    return Payload("pearson delivery", "/v1/pearson/eventing", form, 1, lines=tuple(lines))
