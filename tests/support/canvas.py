"""Canvas as Canvas sends it: quiz submission events (fresh ids, stamped events, the
quiz-submission-events routes, POST and the paginated log), and Live Events (the published
examples of tests/fixtures/canvas/in/live-events/, see its SOURCES.md, signed as Canvas signs
them with a key made here; their golden cases, `golden_requests`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.vendors.base import Inbound
from gateway.vendors.canvas import dev
from gateway.vendors.canvas.live_events import PATH as LIVE_EVENTS_PATH
from tests.support.gateway import TOKEN, Gateway
from tests.support.golden import FIXTURES, GoldenRequest, Outcome

AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class QuizSubmission:
    """Fresh Canvas ids (numbers, as Canvas's are), so tests sharing a gateway never meet."""

    course: int
    quiz: int
    submission: int

    @classmethod
    def fresh(cls) -> QuizSubmission:
        n = uuid.uuid4().int
        return cls(n % 10**6 + 1, n // 10**6 % 10**6 + 1, n // 10**12 % 10**9 + 1)

    @property
    def events(self) -> str:
        return (
            f"/api/v1/courses/{self.course}/quizzes/{self.quiz}"
            f"/submissions/{self.submission}/events"
        )


def stamped(event_type: str, second: int, data: Any = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "client_timestamp": f"2026-03-02T09:{second // 60:02d}:{second % 60:02d}.000Z",
        "event_type": event_type,
    }
    if data is not None:
        event["event_data"] = data
    return event


async def post_json(
    client: httpx.AsyncClient, sub: QuizSubmission, *events: Any, **headers: str
) -> httpx.Response:
    return await client.post(
        sub.events,
        content=orjson.dumps({"quiz_submission_events": list(events)}),
        headers={"Content-Type": "application/json", **AUTH, **headers},
    )


async def post_events(gateway: Gateway, sub: QuizSubmission, *events: Any) -> int:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        response = await client.post(
            sub.events,
            content=orjson.dumps({"quiz_submission_events": list(events)}),
            headers={**AUTH, "Content-Type": "application/json"},
        )
    return response.status_code


async def quiz_log(gateway: Gateway, sub: QuizSubmission) -> list[tuple[str, str]]:
    """(id, event_type) of every event of the latest attempt, following the Link header."""
    found: list[tuple[str, str]] = []
    url: str | None = f"{gateway.url}{sub.events}?per_page=3"
    async with httpx.AsyncClient(timeout=30) as client:
        while url is not None:
            response = await client.get(url, headers=AUTH)
            assert response.status_code == 200
            found += [(e["id"], e["event_type"]) for e in response.json()["quiz_submission_events"]]
            url = response.links.get("next", {}).get("url")
    return found


# --- Live Events ---------------------------------------------------------------------------------

LIVE_EVENTS = FIXTURES / "canvas" / "in" / "live-events"


def examples() -> list[tuple[str, dict[str, Any]]]:
    """(name, payload) of every published example, both formats: `<format>-<file>-<n>`."""
    found = []
    for path in sorted(LIVE_EVENTS.glob("*/*.json")):
        document = orjson.loads(path.read_bytes())
        for index, example in enumerate(document["examples"]):
            found.append((f"{path.parent.name}-{path.stem}-{index}", example["payload"]))
    return found


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(event: Any, key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    """The event as Canvas signs it (the signer of `gateway canvas sign-live-event`), with
    `claims` (time claims, say) beside it."""
    return dev.sign({**event, **claims}, key, kid)


def _one_live_event(outcome: Outcome) -> None:
    """A published Live Event is one Canvas record, never a dead letter."""
    assert outcome["deadletters"] == []
    assert [record["vendor"] for record in outcome["canonical"]] == ["canvas"]
    assert outcome["canonical"][0]["data"]["vendor"]["name"] == "canvas"


def golden_requests(path: Path, relative: Path) -> list[GoldenRequest] | None:
    """A Live Events documentation file (live-events/<format>/<event>.json) holds several
    published examples: each is posted, as an unsigned subscription sends it, to the Live Events
    route (that signed ones give the same records is tests/unit/test_canvas_live_events.py's).
    Other inputs follow the convention."""
    if relative.parts[0] != "live-events" or path.suffix != ".json":
        return None
    document = orjson.loads(path.read_bytes())
    return [
        GoldenRequest(
            relative.with_name(f"{relative.stem}-example-{index}.json"),
            Inbound("POST", "application/json", orjson.dumps(example["payload"])),
            expect=_one_live_event,
            route=LIVE_EVENTS_PATH,
        )
        for index, example in enumerate(document["examples"])
    ]
