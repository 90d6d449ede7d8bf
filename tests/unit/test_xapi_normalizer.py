"""xAPI's recorded emitters beyond their golden files (tests/unit/test_golden.py runs each of
tests/fixtures/xapi/in/, sources in SOURCES.md there, through the statements route's pure steps):
three emitters at least, each published as recorded except where the spec refuses what the
emitter sent, the mapping a reader of the records relies on, statement ids as identities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import EventType
from gateway.vendors.xapi import VENDOR
from tests.support.golden import FIXTURES as ALL_FIXTURES
from tests.support.golden import Case, cases
from tests.support.golden import outcome as golden_outcome

FIXTURES = ALL_FIXTURES / "xapi"
INPUTS = sorted((FIXTURES / "in").glob("*.json"))
CASES = {case.source: case for case in cases("xapi")}


def outcome(path: Path) -> dict[str, Any]:
    """The records a fixture becomes, or the 400 the spec makes of it (`refused`)."""
    case: Case = CASES[path]
    return golden_outcome(VENDOR, case)


def test_there_are_three_emitters_at_least() -> None:
    emitters = {path.name.split("-")[0] for path in INPUTS}
    assert {"moodle", "openedx", "cmi5"} <= emitters
    sources = (FIXTURES / "in" / "SOURCES.md").read_text()
    assert all(path.name in sources for path in INPUTS)


# Published as recorded, except where the spec refuses what the emitter sent.
REFUSED = {
    # Its attempt's context activity has a bare UUID for its id: an activity id is an IRI.
    "openedx-proctored-attempt-submitted.json": "/context/contextActivities/grouping/0/id",
}


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.stem)
def test_each_recorded_emitter_is_published_or_refused_as_the_spec_says(path: Path) -> None:
    result = outcome(path)
    if path.name in REFUSED:
        assert result["refused"]["status"] == 400
        assert [e["path"] for e in result["refused"]["errors"]] == [REFUSED[path.name]]
    else:
        assert "refused" not in result
        assert result["canonical"]
        assert not result["deadletters"]


def test_the_mapping_of_the_recorded_statements() -> None:
    """What a reader of the records relies on, said once more than the golden files say it."""
    started = outcome(FIXTURES / "in" / "moodle-quiz-attempt-started.json")["canonical"][0]
    assert started["type"] == EventType.ATTEMPT_STARTED
    assert started["data"]["assessment"]["id"] == "http://www.example.org/mod/quiz/view.php?id=1"
    assert started["data"]["attempt"]["id"].endswith("attempt.php?attempt=1&cmid=1")
    assert started["data"]["learner"]["id"] == "1"
    assert started["time"] == "2015-06-10T14:31:41.000Z"
    completed, answered = outcome(FIXTURES / "in" / "moodle-quiz-attempt-submitted-truefalse.json")[
        "canonical"
    ]
    assert completed["type"] == EventType.ATTEMPT_GRADED
    assert completed["data"]["score"] == {"given": 50, "max": 100, "min": 0, "scaled": 0.5}
    assert answered["type"] == EventType.ITEM_COMPLETED
    assert answered["data"]["item"]["id"].endswith("question.php?cmid=1&id=1")
    assert answered["data"]["assessment"]["id"] == completed["data"]["assessment"]["id"]
    cmi5 = outcome(FIXTURES / "in" / "cmi5-spec-failed.json")["canonical"][0]
    assert cmi5["type"] == EventType.ATTEMPT_GRADED
    assert cmi5["data"]["attempt"]["id"] == "ec231277-b27b-4c15-8291-d29225b2b8f7"  # registration
    assert cmi5["data"]["vendor"]["success"] is False
    evaluated = outcome(FIXTURES / "in" / "openedx-problem-check-server.json")["canonical"][0]
    assert evaluated["type"] == EventType.ACTIVITY
    assert evaluated["data"]["action"] == "evaluated"
    assert evaluated["data"]["course"]["id"].endswith("course-v1:edX+DemoX+Demo_Course")
    assert evaluated["data"]["score"] == {"given": 0, "max": 1, "min": 0, "scaled": 0}


def test_statement_ids_are_the_record_identities() -> None:
    body = orjson.loads((FIXTURES / "in" / "cmi5-spec-failed.json").read_bytes())
    record = outcome(FIXTURES / "in" / "cmi5-spec-failed.json")["canonical"][0]
    assert record["data"]["vendor"]["event_id"] == body["id"]
