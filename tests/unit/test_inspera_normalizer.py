"""The Inspera decoder, splitter, streaming parser and normalizer: one decision per test
(the golden files pin the rest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.canonical import NormalizeContext
from gateway.errors import MalformedPayload, UnsupportedMediaType
from gateway.pipeline import Normalized, normalize_items, split_request
from gateway.vendors.base import Inbound
from gateway.vendors.inspera import VENDOR
from gateway.vendors.inspera.normalize import (
    REDACTED,
    ExportParser,
    InvalidExport,
    action_of,
    download_url,
    export_items,
    redact_urls,
)
from tests.support.inspera import EXPORT, EXPORTS, WEBHOOKS, export_file_items, webhook_items
from tests.support.schemas import CANONICAL, SCHEMAS

CTX = NormalizeContext("uni", "inspera", datetime(2026, 1, 1, tzinfo=UTC), "req-1")
SIGNED = "https://b.s3.amazonaws.com/e.json?X-Amz-Signature=SECRET"
EXPORT_FILE = SCHEMAS.get("inspera/inspera.schema.json#/$defs/exportFile")
URL_SECRET = "FIXTURE-SECRET"  # every pre-signed URL of the fixtures carries it


def webhook(body: bytes, media: str = "application/json") -> Normalized:
    items = split_request(VENDOR, Inbound("POST", media, body), SCHEMAS)
    return normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=True)


def export_event(candidate: dict[str, Any] | None = None, **event: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"eventId": "e-1", "event": "X", "timeStamp": "2024-05-14T08:00:00Z"}
    base.update(event)
    (item,) = export_items("77", {**(candidate or {"userId": 5}), "events": [base]}, 0)
    normalized = normalize_items(VENDOR, [item], CTX, SCHEMAS, include_original=False)
    assert not normalized.rejected, normalized.rejected
    (record,) = normalized.canonical
    assert not CANONICAL.errors(record), CANONICAL.errors(record)
    return record


@pytest.mark.parametrize("body", [b"", b"  \n", b"{}", b"null"], ids=repr)
def test_a_subscription_validation_publishes_nothing(body: bytes) -> None:
    normalized = webhook(body)
    assert normalized.canonical == []
    assert normalized.rejected == []


def test_an_empty_validation_post_needs_no_content_type() -> None:
    assert webhook(b"", media="application/x-www-form-urlencoded").canonical == []


@pytest.mark.parametrize("media", ["", "text/plain", "application/vnd.inspera+json"])
def test_json_under_other_declared_types_is_taken(media: str) -> None:
    body = b'{"event": "confirm_final_grades", "contextObjectId": 1}'
    assert len(webhook(body, media).canonical) == 1


def test_a_form_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        webhook(b"event=x", media="application/x-www-form-urlencoded")


@pytest.mark.parametrize("body", [b"{nope", b"[]", b'"text"'], ids=repr)
def test_not_a_json_object_is_400(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        webhook(body)


def test_an_object_without_event_is_dead_lettered_not_dropped() -> None:
    normalized = webhook(b'{"subscriptionId": 3}')
    assert normalized.canonical == []
    ((item, rejection),) = normalized.rejected
    assert rejection.code == "schema_violation"
    assert item.payload == {"subscriptionId": 3}


def test_a_redelivery_has_the_same_id_even_with_a_re_signed_url() -> None:
    def body(signature: str) -> bytes:
        return orjson.dumps(
            {
                "event": "event_by_candidates_export_finished",
                "contextObjectId": 9,
                "timestamp": "2024-05-14T12:00:00Z",
                "url": f"https://b.s3.amazonaws.com/e.json?X-Amz-Signature={signature}",
            }
        )

    first, second = webhook(body("one")), webhook(body("two"))
    assert first.canonical[0]["id"] == second.canonical[0]["id"]
    assert b"X-Amz-Signature" not in orjson.dumps(first.canonical)  # `original` included


def test_another_timestamp_is_another_notification() -> None:
    def body(timestamp: str) -> bytes:
        return orjson.dumps({"event": "e", "contextObjectId": 9, "timestamp": timestamp})

    first = webhook(body("2024-05-14T12:00:00Z"))
    second = webhook(body("2024-05-14T12:00:01Z"))
    assert first.canonical[0]["id"] != second.canonical[0]["id"]


def test_urls_are_found_by_their_dotted_path_in_the_configured_order() -> None:
    body = {"event": "x", "links": [SIGNED], "data": {"url": SIGNED + "2"}, "url": SIGNED + "1"}
    redacted, urls = redact_urls(body)
    assert redacted == {
        "event": "x",
        "links": [REDACTED],
        "data": {"url": REDACTED},
        "url": REDACTED,
    }
    assert urls == {"links.0": SIGNED, "data.url": SIGNED + "2", "url": SIGNED + "1"}
    (item,) = split_request(
        VENDOR, Inbound("POST", "application/json", orjson.dumps(body)), SCHEMAS
    )
    assert download_url(item, ("downloadUrl", "data.url", "url")) == SIGNED + "2"
    assert download_url(item, ("downloadUrl",)) is None


def test_the_candidate_is_the_learner_and_another_creator_the_actor() -> None:
    record = export_event({"userId": 5, "candidateId": "C-5"}, userId=900)
    assert record["data"]["learner"] == {"id": "5", "candidate_id": "C-5"}
    assert record["data"]["actor"] == {"id": "900"}
    assert record["partitionkey"] == "uni|5|77"
    assert record["subject"] == "77"


def test_an_event_the_candidate_created_has_no_actor() -> None:
    record = export_event({"userId": 5}, userId=5.0)
    assert "actor" not in record["data"]
    assert "created_by" not in record["data"]["vendor"]


def test_without_the_candidates_user_id_the_creator_is_only_reported() -> None:
    record = export_event({"candidateId": "C-5"}, userId=900)
    assert record["data"]["learner"] == {"id": "C-5", "candidate_id": "C-5"}
    assert "actor" not in record["data"]
    assert record["data"]["vendor"]["created_by"] == "900"


@pytest.mark.parametrize(
    ("flagging", "kind"),
    [
        (None, "edu.activity.generic"),
        ({}, "edu.activity.generic"),
        ({"flagType": None, "flagSubTypes": [], "comment": None}, "edu.activity.generic"),
        ({"flagType": "CHEATING"}, "edu.proctoring.flagged"),
        ({"comment": "seen talking"}, "edu.proctoring.flagged"),
    ],
)
def test_flagging_info_makes_a_proctoring_flag(flagging: Any, kind: str) -> None:
    assert export_event(flaggingInfo=flagging)["type"] == kind


def test_flagging_and_extra_info_are_kept_in_proctoring() -> None:
    record = export_event(
        flaggingInfo={
            "flagType": "T",
            "flagSubTypes": ["A", "B"],
            "comment": "c",
            "severityLevel": "HIGH",
        },
        extraInfo={"type": "K", "value": "V"},
    )
    assert record["data"]["proctoring"] == {
        "flag_type": "T",
        "flag_sub_types": ["A", "B"],
        "severity_level": "HIGH",
        "comment": "c",
        "extra_info": {"type": "K", "value": "V"},
    }


def test_attachments_keep_name_id_and_size_never_the_url() -> None:
    files = [
        {"fileName": "a.png", "contentItemId": 12.0, "fileSize": 3, "presignedUrl": SIGNED},
        {"fileName": "b.png", "contentItemId": 13, "fileSize": 4, "PresignedURL": SIGNED},
    ]
    record = export_event(attachedFiles=files)
    assert record["data"]["proctoring"]["attachments"] == [
        {"file_name": "a.png", "content_item_id": "12", "file_size": 3},
        {"file_name": "b.png", "content_item_id": "13", "file_size": 4},
    ]
    assert b"SECRET" not in orjson.dumps(record)


def test_a_url_with_a_query_anywhere_in_an_event_is_redacted() -> None:
    record = export_event(extraInfo={"type": "LINK", "value": SIGNED})
    assert record["data"]["proctoring"]["extra_info"]["value"] == REDACTED
    plain = export_event(extraInfo={"type": "LINK", "value": "https://example.org/page"})
    assert plain["data"]["proctoring"]["extra_info"]["value"] == "https://example.org/page"


def test_the_event_id_is_the_identity_so_a_re_export_dedupes() -> None:
    first = export_event(eventId="same")
    again = export_event(eventId="same")
    assert first["id"] == again["id"]
    other = export_event({"userId": 6}, eventId="same")  # another candidate: another record
    assert other["id"] != first["id"]


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("confirm_final_grades", "confirm_final_grades"),
        ("NEW_SEB_LOGIN", "new_seb_login"),
        ("newSebLogin", "new_seb_login"),
        ("Network error (offline)", "network_error_offline"),
        ("!!!", "event"),
    ],
)
def test_actions_are_snake_case(name: str, action: str) -> None:
    assert action_of(name) == action


def parse(data: bytes) -> list[Any]:
    parser = ExportParser()
    return parser.feed(data) + parser.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"candidates": {"a": 1}}', "not an array"),
        (b'{"candidates": 3}', "not an array"),
        (b'{"created": "x"}', "no `candidates` array"),
        (b'{"candidates": [{"userId": 1, "events": [', "not valid JSON"),
        (b'{"candidates": [] ', "not valid JSON"),
        (b'{"candidates": []} trailing', "not valid JSON"),
    ],
)
def test_an_export_that_is_not_an_export_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidExport, match=message):
        parse(data)


def test_parse_errors_do_not_quote_the_file() -> None:
    with pytest.raises(InvalidExport) as refused:
        parse(b'{"candidates": [{"u": "https://x/?X-Amz-Signature=SECRET" oops}]}')
    assert "SECRET" not in refused.value.message


def test_candidates_come_out_one_by_one_as_bytes_arrive() -> None:
    parser = ExportParser()
    assert parser.feed(b'{"created": "t", "candidates": [{"userId": 1, "events": []}') == [
        {"userId": 1, "events": []}
    ]
    assert parser.feed(b', {"userId": 2') == []
    assert parser.feed(b"}]}") == [{"userId": 2}]
    assert parser.close() == []
    assert (parser.created, parser.candidates) == ("t", 2)


def test_numbers_stay_numbers() -> None:
    (candidate,) = parse(b'{"candidates": [{"userId": 12345678901, "size": 1.5}]}')
    assert candidate == {"userId": 12345678901, "size": 1.5}


# --- the fixtures (tests/fixtures/inspera/in/; their golden files: tests/unit/test_golden.py) ---


@pytest.mark.parametrize("path", WEBHOOKS + EXPORTS, ids=lambda p: p.name)
def test_no_presigned_url_reaches_a_record_or_dead_letter(path: Path) -> None:
    assert URL_SECRET in path.read_text() or "FIXTURE" not in path.read_text()
    items = webhook_items(path) if path.parent.name == "webhooks" else export_file_items(path)
    # With `original` on too: what a record or a dead letter could carry is the item's payload.
    normalized = normalize_items(VENDOR, items, CTX, SCHEMAS, include_original=True)
    published = orjson.dumps([normalized.canonical, [item.payload for item in items]])
    assert URL_SECRET.encode() not in published


def test_the_export_fixture_is_a_valid_export_file() -> None:
    document = orjson.loads(EXPORT.read_bytes())
    assert not EXPORT_FILE.errors(document)


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 20])
def test_the_parser_gives_the_same_items_whatever_the_chunking(chunk: int) -> None:
    path = EXPORT.parent / "edge-cases.json"
    assert export_file_items(path, chunk) == export_file_items(path, 7)
