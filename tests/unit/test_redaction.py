"""What a dead-lettered body keeps: never the credentials or bearer secrets it carried."""

from __future__ import annotations

from urllib.parse import parse_qs

from gateway.vendors.base import (
    Inbound,
    redact_form_fields,
    redact_url_queries,
    redact_url_queries_in,
)
from gateway.vendors.canvas import VENDOR as CANVAS
from gateway.vendors.inspera import VENDOR as INSPERA
from gateway.vendors.pearson import VENDOR as PEARSON

FORM = "application/x-www-form-urlencoded"


def test_canvas_drops_the_access_token_and_keeps_the_rest() -> None:
    assert CANVAS.redact_body is not None
    body = b"access_token=dev-token&quiz_submission_events[]=page_blurred&a[]=2"
    kept = CANVAS.redact_body(Inbound("POST", FORM, body))
    assert b"dev-token" not in kept
    fields = parse_qs(kept.decode())
    assert fields["access_token"] == ["[redacted]"]
    assert fields["quiz_submission_events[]"] == ["page_blurred"]


def test_pearson_drops_the_signature() -> None:
    assert PEARSON.redact_body is not None
    body = b"MESSAGE-ID=m1&AUTHORIZATION=dev-principal%7C2026%7Cabcdef&PAYLOAD=%7B%7D"
    kept = PEARSON.redact_body(Inbound("POST", FORM, body))
    assert b"abcdef" not in kept
    assert parse_qs(kept.decode())["MESSAGE-ID"] == ["m1"]


def test_field_names_match_whatever_their_case_and_encoding() -> None:
    redact = redact_form_fields("access_token")
    kept = redact(Inbound("POST", FORM, b"ACCESS%5FTOKEN=secret&x=1"))
    assert b"secret" not in kept


def test_an_undecodable_form_is_not_kept_at_all() -> None:
    kept = redact_form_fields("access_token")(Inbound("POST", FORM, b"access_token=\xff\xfe"))
    assert kept == b"[redacted]"


def test_inspera_drops_pre_signed_url_queries() -> None:
    assert INSPERA.redact_body is redact_url_queries
    body = b'{"event": "x", "url": "https://s3.amazonaws.com/b/f.json?X-Amz-Signature=s3cr3t&a=b"'
    kept = redact_url_queries(Inbound("POST", "application/json", body))
    assert b"s3cr3t" not in kept
    assert b"https://s3.amazonaws.com/b/f.json?[redacted]" in kept


def test_a_form_without_secrets_is_kept_byte_for_byte() -> None:
    body = b"quiz_submission_events[]=page_blurred&quiz_submission_events[]=page_focused"
    assert redact_form_fields("access_token")(Inbound("POST", FORM, body)) == body


def test_request_facts_keep_no_pre_signed_url_query() -> None:
    meta = {"urls": ["https://b.s3.amazonaws.com/f.json?X-Amz-Signature=S3CR3T"], "n": 1}
    kept = redact_url_queries_in(meta)
    assert kept == {"urls": ["https://b.s3.amazonaws.com/f.json?[redacted]"], "n": 1}


def test_an_inspera_dead_letter_keeps_no_pre_signed_url() -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from gateway.canonical import NormalizeContext  # noqa: PLC0415
    from gateway.errors import Rejection  # noqa: PLC0415
    from gateway.kafka.publisher import Publisher  # noqa: PLC0415
    from gateway.pipeline import Pipeline  # noqa: PLC0415
    from gateway.settings import Settings  # noqa: PLC0415

    settings = Settings()
    pipeline = Pipeline.for_settings(settings, Publisher(settings.kafka, settings.server))
    body = {"contextObjectId": 1, "url": "https://b.s3.amazonaws.com/f?X-Amz-Signature=S3CR3T"}
    (item,) = INSPERA.split(body)
    ctx = NormalizeContext("t", "inspera", datetime(2026, 1, 1, tzinfo=UTC))
    letter = pipeline._dead_letter(ctx, Rejection("schema_violation", "bad"), item=item)
    assert b"S3CR3T" not in letter.value
