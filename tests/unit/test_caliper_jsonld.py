"""Caliper payloads are JSON-LD documents: what the receiver makes of `null`, `@context` and of
entities given only by their properties, through the pure pipeline (split, validate, normalize).

- An optional property whose value is `null` is absent, at any depth: every positive payload
  (IMS's, our edge cases, the real emitters' corpus) with any one optional property set to `null`
  is valid and gives exactly the record it gives without that property; the record carries no
  `null`; the original, where kept, is the item as sent.
- A `null` in a required property (event: id, type, actor, action, object, eventTime; entity
  description: id, type; a Score's or Result's attempt) is a schema violation at its pointer.
- `@context` in every form JSON-LD allows; an unsupported `dataVersion` is still refused.
- Entities given only by their properties, blank-node ids, Joda-Time timestamps; an envelope
  whose `data` is empty is malformed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.errors import MalformedPayload, UnsupportedVersion
from gateway.pipeline import Normalized, normalize_items, split_request, validate_item
from gateway.vendors.base import Inbound, Item
from gateway.vendors.caliper import VENDOR
from gateway.vendors.caliper.normalize import ENTITY_SCHEMA, EVENT_SCHEMA, is_event
from tests.support.caliper import as_envelope, edge_fixtures, emitter_requests, positive_fixtures
from tests.support.schemas import SCHEMAS

CANONICAL: Final = SCHEMAS.get("canonical/event.schema.json")
CTX: Final = NormalizeContext("uni", "caliper", datetime(2026, 1, 1, tzinfo=UTC), "req-1")
V1P1: Final = "http://purl.imsglobal.org/ctx/caliper/v1p1"
V1P2: Final = "http://purl.imsglobal.org/ctx/caliper/v1p2"
EVENT_REQUIRED: Final = ("id", "type", "actor", "action", "object", "eventTime")
ENTITY_REQUIRED: Final = ("id", "type")


def envelope(*items: Any, version: str = V1P2) -> dict[str, Any]:
    head = {"sensor": "s", "sendTime": "2026-01-01T00:00:00Z", "dataVersion": version}
    return {**head, "data": list(items)}


def run(*items: Any, include_original: bool = False, version: str = V1P2) -> Normalized:
    body = orjson.dumps(envelope(*items, version=version))
    split = split_request(VENDOR, Inbound("POST", "application/json", body), SCHEMAS)
    return normalize_items(VENDOR, split, CTX, SCHEMAS, include_original)


def one(item: dict[str, Any]) -> dict[str, Any]:
    normalized = run(item)
    assert not normalized.rejected, [r.errors for _, r in normalized.rejected]
    (record,) = normalized.canonical
    assert not CANONICAL.errors(record), CANONICAL.errors(record)
    return record


def rejected_at(item: dict[str, Any]) -> list[str]:
    normalized = run(item)
    assert not normalized.canonical
    ((_, rejection),) = normalized.rejected
    assert rejection.code == "schema_violation"
    return [error.path for error in rejection.errors]


def event(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "@context": V1P2,
        "id": "urn:uuid:7a1d4c0e-2222-4333-8444-955566667777",
        "type": "AssessmentEvent",
        "actor": {"id": "https://example.edu/users/1", "type": "Person"},
        "action": "Submitted",
        "object": {"id": "https://example.edu/assess/1", "type": "Assessment", "maxScore": 10},
        "eventTime": "2026-03-01T10:00:00.000Z",
    }
    base.update(fields)
    return base


def nulls_in(value: Any, path: str = "") -> Iterator[str]:
    """The JSON pointer of every null in `value`."""
    if value is None:
        yield path or "(root)"
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from nulls_in(child, f"{path}/{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from nulls_in(child, f"{path}/{index}")


# --- null is absent, at any depth ---------------------------------------------------------------


def positive_items() -> list[tuple[str, Any]]:
    """Every item of every payload the gateway takes: IMS positives, edge cases, real emitters."""
    items = [
        (f"{path.parent.name}/{path.name}#{i}", item)
        for path in [*positive_fixtures(), *edge_fixtures()]
        for i, item in enumerate(as_envelope(path)[1])
    ]
    items += [
        (f"{sent.label}#{i}", item)
        for sent in emitter_requests()
        for i, item in enumerate(sent.envelope["data"])
    ]
    return items


POSITIVE: Final = positive_items()


def optional_paths(item: dict[str, Any]) -> Iterator[tuple[str, ...]]:
    """Every property of the item, at any depth (inside arrays too), that is not required where
    it is, and is not already null."""
    required = EVENT_REQUIRED if is_event(item) else ENTITY_REQUIRED

    def walk(node: Any, path: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        if isinstance(node, list):
            for index, child in enumerate(node):
                yield from walk(child, (*path, str(index)))
        elif isinstance(node, dict):
            node_kind = node.get("type") if isinstance(node.get("type"), str) else ""
            for key, child in node.items():
                top_required = not path and key in required
                # IMS refuses a null attempt of a Score or Result (its negative fixtures); a
                # Joda-Time timestamp is its `millis`.
                strict = key == "millis" or (
                    key == "attempt" and str(node_kind).endswith(("Score", "Result"))
                )
                if child is not None and not top_required and not strict:
                    yield (*path, key)
                yield from walk(child, (*path, key))

    yield from walk(item, ())


def with_value(item: Any, path: tuple[str, ...], value: Any, *, drop: bool = False) -> Any:
    changed = copy.deepcopy(item)
    parent = changed
    for step in path[:-1]:
        parent = parent[int(step)] if isinstance(parent, list) else parent[step]
    if drop:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return changed


def outcome(item: Any) -> tuple[str, Any]:
    """What the pipeline makes of one item: the record without its id (which digests the item
    as sent), or the paths of its schema errors."""
    schema = EVENT_SCHEMA if is_event(item) else ENTITY_SCHEMA
    split = Item(payload=item, schema=schema, where="/data/0", meta={"sensor": "s"})
    rejection = validate_item(VENDOR, split, SCHEMAS)
    if rejection is not None:
        return "rejected", sorted(e.path for e in rejection.errors)
    (canonical,) = VENDOR.normalize(split, CTX)
    return "record", (canonical.type, canonical.time, canonical.subject, canonical.data)


def test_the_null_property_corpus_is_complete() -> None:
    """Guards the test below against a silently shrunken corpus."""
    assert len({label.split("#")[0] for label, _ in POSITIVE}) == 75 + 10 + 67


@pytest.mark.parametrize(("label", "item"), POSITIVE, ids=[label for label, _ in POSITIVE])
def test_an_optional_null_is_an_absent_property_at_any_depth(label: str, item: Any) -> None:
    paths = list(optional_paths(item))
    assert paths, f"{label} has no optional property"
    for path in paths:
        nulled, dropped = with_value(item, path, None), with_value(item, path, None, drop=True)
        as_null, as_absent = outcome(nulled), outcome(dropped)
        where = "/" + "/".join(path)
        assert as_null[0] == "record", f"{label}: null at {where} refused: {as_null[1]}"
        assert as_null == as_absent, f"{label}: null at {where} is not the same as absent"
        assert not list(nulls_in(as_null[1][3])), f"{label}: a null reached the record"


def test_caliper_python_unoptimized_nulls_everywhere_give_the_optimized_record() -> None:
    """caliper-python's `optimize_serialization=False`: every unset property null, `@context`
    repeated on every nested entity. The record is the one of the same event sent thinned."""
    attempt = {
        "id": "https://example.edu/assess/1/users/1/attempts/1",
        "type": "Attempt",
        "assignee": {"id": "https://example.edu/users/1", "type": "Person"},
        "assignable": {"id": "https://example.edu/assess/1", "type": "Assessment"},
        "count": 1,
    }
    thin = event(action="Started", generated=attempt)
    unset = ("dateCreated", "dateModified", "description", "extensions", "name", "profile")
    fat = copy.deepcopy(thin)
    for entity in (fat["actor"], fat["object"], fat["generated"], *fat["generated"].values()):
        if isinstance(entity, dict):
            entity.update({"@context": V1P2, **dict.fromkeys(unset), "otherIdentifiers": None})
    fat.update(dict.fromkeys(("edApp", "extensions", "federatedSession", "group", "profile")))
    fat.update(dict.fromkeys(("membership", "referrer", "session", "target")))
    thin_record, fat_record = one(thin), one(fat)
    assert fat_record["data"] == thin_record["data"]
    assert fat_record["type"] == "edu.assessment.attempt.started"
    assert fat_record["data"]["attempt"]["count"] == 1
    assert not list(nulls_in(fat_record))


def test_the_original_is_kept_as_sent_with_its_nulls() -> None:
    sent = event(edApp=None, extensions={"kept": 1, "dropped": None, "deep": [{"x": None}]})
    normalized = run(sent, include_original=True)
    (record,) = normalized.canonical
    assert record["data"]["original"] == sent  # as sent: the nulls are the sender's
    assert record["data"]["vendor"]["extensions"] == {"kept": 1, "deep": [{}]}
    without_original = {k: v for k, v in record["data"].items() if k != "original"}
    assert not list(nulls_in(without_original))


# --- null in a required property: still a violation, at its pointer -----------------------------


@pytest.mark.parametrize("name", EVENT_REQUIRED)
def test_a_null_in_a_required_event_property_is_refused_at_its_pointer(name: str) -> None:
    assert f"/{name}" in rejected_at(event(**{name: None}))


@pytest.mark.parametrize("name", ENTITY_REQUIRED)
def test_a_null_in_a_required_entity_property_is_refused_at_its_pointer(name: str) -> None:
    entity = {"id": "https://example.edu/users/1", "type": "Person", name: None}
    assert f"/{name}" in rejected_at(entity)


@pytest.mark.parametrize("kind", ["Score", "Result"])
def test_a_null_attempt_of_a_score_is_refused_as_ims_does(kind: str) -> None:
    score = {"id": "https://example.edu/scores/1", "type": kind, "attempt": None}
    assert "/attempt" in rejected_at(score)
    del score["attempt"]
    assert one(score)["type"] == "edu.entity.described"  # absent is fine


def test_a_null_action_or_event_time_does_not_make_an_entity_an_event() -> None:
    assert not is_event({"id": "x", "type": "Person", "action": None, "eventTime": None})
    assert is_event({"id": "x", "type": "Person", "action": "Viewed"})


# --- @context in every form ---------------------------------------------------------------------

VENDOR_CONTEXT: Final = "https://example.edu/ctx/ours.jsonld"


@pytest.mark.parametrize(
    "context",
    [
        V1P2,
        [V1P2, VENDOR_CONTEXT],
        [VENDOR_CONTEXT, V1P2],
        [VENDOR_CONTEXT, {"@vocab": "https://example.edu/vocab#"}],
        {"@vocab": "http://purl.imsglobal.org/caliper/"},
        {"@context": V1P1},  # HMH's caliper-java: the context wrapped in an object
        {"@context": V1P1, "@vocab": None, "@base": None},  # ... with nulls beside it
        {"@context": [VENDOR_CONTEXT, V1P2]},
        None,
    ],
    ids=[
        "string",
        "array-caliper-first",
        "array-vendor-first",
        "array-inline-object",
        "inline-object",
        "wrapped",
        "wrapped-with-nulls",
        "wrapped-array",
        "null",
    ],
)
def test_context_in_every_form_json_ld_allows(context: Any) -> None:
    record = one(event(**{"@context": context}))
    assert record["type"] == "edu.assessment.attempt.submitted"
    entity = {"@context": context, "id": "https://example.edu/users/1", "type": "Person"}
    assert one(entity)["type"] == "edu.entity.described"


def test_context_repeated_or_absent_on_nested_entities() -> None:
    actor = {"@context": V1P2, "id": "https://example.edu/users/1", "type": "Person"}
    assert one(event(actor=actor))["data"]["learner"]["id"] == "https://example.edu/users/1"
    nested = event(object={"id": "https://example.edu/assess/1", "type": "Assessment"})
    assert one(nested)["data"]["assessment"] == {
        "id": "https://example.edu/assess/1",
        "type": "Assessment",
    }


@pytest.mark.parametrize(
    "context",
    [
        "http://some.domain.com/not/a/caliper/context",
        [VENDOR_CONTEXT],
        {"@context": "http://some.domain.com/not/a/caliper/context"},
        [{"@context": VENDOR_CONTEXT}],
    ],
    ids=["string", "array-without-caliper", "wrapped-unknown", "array-wrapped-unknown"],
)
def test_a_context_without_caliper_is_still_refused(context: Any) -> None:
    assert "/@context" in rejected_at(event(**{"@context": context}))


@pytest.mark.parametrize(
    "version",
    ["http://purl.imsglobal.org/ctx/caliper/v1p0", "http://purl.imsglobal.org/ctx/caliper/v2p0"],
)
def test_an_unsupported_data_version_is_refused_whatever_the_events_contexts(
    version: str,
) -> None:
    wrapped = event(**{"@context": {"@context": version}})
    body = orjson.dumps(envelope(wrapped, version=version))
    with pytest.raises(UnsupportedVersion) as refused:
        split_request(VENDOR, Inbound("POST", "application/json", body), SCHEMAS)
    assert refused.value.status == 422


# --- entities given only by their properties, blank nodes, timestamps, empty envelopes ----------


def test_a_generated_that_only_carries_a_score_maps_the_score_and_attempt_facts() -> None:
    """Open edX event-routing-backends' GradeEvent: `generated` has no id or type of its own, the
    Score has a blank-node id, and the Attempt's facts are in its `extensions`."""
    path = Path(__file__).parents[1] / "fixtures/caliper/in/emitters/openedx-event-routing-backends"
    graded = orjson.loads((path / "problem_check(server).json").read_bytes())
    data = one(graded)["data"]
    assert data["score"] == {"id": "_:score", "given": 0, "max": 1}
    learner = "http://localhost:18000/user/32e08e30-f8ae-4ce2-94a8-c2bfe38a70cb"
    assert data["learner"] == {"id": learner, "type": "Person"}
    assert data["attempt"]["count"] == 10
    assert data["assessment"]["id"].endswith("block@3fc5461f86764ad7bdbdf6cbdde61e66")


def test_an_untyped_generated_with_a_score_given_is_a_score() -> None:
    record = one(event(type="GradeEvent", action="Graded", generated={"scoreGiven": 3}))
    assert record["data"]["score"] == {"given": 3}


def test_an_entity_without_an_id_is_taken_and_left_out_of_the_record() -> None:
    record = one(event(object={"type": "Assessment", "name": "unnamed"}))
    assert "assessment" not in record["data"]  # unknown: no id to join on, never invented
    assert record["type"] == "edu.assessment.attempt.submitted"


def test_a_typed_entity_without_an_id_still_has_its_type_checked() -> None:
    assert "/object" in rejected_at(event(object={"type": "Person"}))


def test_a_blank_node_id_is_an_id() -> None:
    record = one(event(object={"id": "_:quiz", "type": "Assessment"}))
    assert record["data"]["assessment"] == {"id": "_:quiz", "type": "Assessment"}


def test_an_unknown_nested_entity_type_maps_as_a_generic_entity() -> None:
    actor = {"id": "https://example.edu/bots/1", "type": "ReadingRobot"}
    record = one(event(type="ViewEvent", action="Viewed", actor=actor))
    assert record["data"]["actor"] == actor


def test_a_joda_time_event_time_is_its_millis() -> None:
    joda = {"millis": 1535406016239, "chronology": {"zone": {"id": "America/New_York"}}}
    assert one(event(eventTime=joda))["time"] == "2018-08-27T21:40:16.239Z"
    assert "/eventTime" in rejected_at(event(eventTime={"millis": 10**17, "chronology": {}}))
    assert "/eventTime" in rejected_at(event(eventTime={"chronology": {}, "millis": None}))


def test_an_envelope_with_empty_data_is_malformed() -> None:
    body = orjson.dumps(envelope())
    with pytest.raises(MalformedPayload) as refused:
        split_request(VENDOR, Inbound("POST", "application/json", body), SCHEMAS)
    assert refused.value.status == 400
    assert [e.path for e in refused.value.errors] == ["/data"]
