"""Url-encoded forms as the verifiers read them: a credential or a signature may travel in one."""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs

FORM: Final = "application/x-www-form-urlencoded"


def form_fields(body: bytes) -> dict[str, str]:
    """An url-encoded form's fields (the first value of each); undecodable forms have none."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {key: values[0] for key, values in parsed.items()}


def form_values(body: bytes, name: str) -> list[str]:
    """Every value of one field of an url-encoded form; none when the form is undecodable."""
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return []
    return parsed.get(name, [])
