"""`server.public_url`: where Canvas's pagination links point, checked when the configuration is
read, so that a typo fails start-up rather than every link a canvasapi client follows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import load_settings


def server(tmp_path: Path, public_url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[server]\npublic_url = {public_url!r}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "url",
    ["", "https://gateway.example.edu", "http://127.0.0.1:8080", "https://lms.example.edu/gw/"],
)
def test_urls_senders_reach_the_gateway_at(tmp_path: Path, url: str) -> None:
    assert load_settings(server(tmp_path, url), environ={}).server.public_url == url


@pytest.mark.parametrize(
    "url",
    [
        "gateway.example.edu",  # no scheme
        "ftp://gateway.example.edu",
        "https://",
        "https://user:pass@gateway.example.edu",  # credentials would travel in every link
        "https://gateway.example.edu/?x=1",
        "https://gateway.example.edu/#top",
        "https://gateway.example.edu:99999",
        "/api",
    ],
)
def test_anything_else_fails_start_up(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.public_url"):
        load_settings(server(tmp_path, url), environ={})


def test_it_can_come_from_the_environment(tmp_path: Path) -> None:
    env = {"GATEWAY_SERVER_PUBLIC_URL": "https://gateway.example.edu"}
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    assert load_settings(path, environ=env).server.public_url == "https://gateway.example.edu"
    with pytest.raises(ConfigError, match=r"server\.public_url"):
        load_settings(path, environ={"GATEWAY_SERVER_PUBLIC_URL": "nope"})
