"""Canvas quiz submission events as Canvas sends them: fresh ids, stamped events, the
quiz-submission-events routes (POST and the paginated log).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.support.gateway import TOKEN, Gateway

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
