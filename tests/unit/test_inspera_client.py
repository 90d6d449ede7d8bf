"""The Inspera export API client against a fake Inspera API: a real HTTP server on loopback
that checks the token call (API key in the `code` header, grant type and client id), the bearer
token on every export call, and answers a scripted sequence of job states.

`FakeInspera` (tests/support/inspera.py) is also what the `gateway inspera export` integration
test runs against.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.vendors.inspera.client import ExportStatus, InsperaApiError, InsperaClient, ProgressBar
from gateway.vendors.inspera.settings import InsperaSettings
from tests.support.inspera import API_KEY, FakeInspera


@pytest.fixture
def inspera() -> Iterator[FakeInspera]:
    fake = FakeInspera().start()
    try:
        yield fake
    finally:
        fake.stop()


def settings_for(fake: FakeInspera, **overrides: Any) -> InsperaSettings:
    values: dict[str, Any] = {
        "api_base_url": fake.url,
        "client_id": fake.client_id,
        "poll_interval_seconds": 0.01,
        "allow_private_addresses": True,  # the fake Inspera serves on loopback
    }
    values.update(overrides)
    return InsperaSettings(**values)


async def test_orders_polls_and_returns_the_download_url(inspera: FakeInspera) -> None:
    url = inspera.file_url("export.json")
    inspera.states = [
        {"status": "RUNNING", "progress": 50},
        {"status": "FINISHED", "progress": 100, "url": url},
    ]
    seen: list[ExportStatus] = []
    async with InsperaClient(settings_for(inspera), API_KEY) as client:
        status = await client.wait_for_export("4711", seen.append)
    assert status.done
    assert status.url == url
    assert inspera.ordered == ["4711"]
    assert inspera.polls == ["job-7", "job-7"]
    assert [(s.status, s.progress) for s in seen] == [
        ("RUNNING", 0.0),
        ("RUNNING", 50.0),
        ("FINISHED", 100.0),
    ]
    assert inspera.tokens_issued == 1  # one token for the whole wait


async def test_a_wrong_api_key_fails_without_showing_it(inspera: FakeInspera) -> None:
    async with InsperaClient(settings_for(inspera), "wrong-key") as client:
        with pytest.raises(InsperaApiError, match="authentication failed: HTTP 401") as failed:
            await client.order_export("4711")
    assert "wrong-key" not in failed.value.message
    assert inspera.ordered == []


async def test_a_rejected_token_is_renewed_once(inspera: FakeInspera) -> None:
    inspera.revoke_after_poll = True
    inspera.states = [
        {"status": "RUNNING", "progress": 10},
        {"status": "DONE", "url": inspera.file_url("e.json")},
    ]
    async with InsperaClient(settings_for(inspera), API_KEY) as client:
        status = await client.wait_for_export("1")
    assert status.done
    assert inspera.tokens_issued == 2


async def test_a_failed_job_is_an_error(inspera: FakeInspera) -> None:
    inspera.states = [{"status": "failed", "progress": 20}]
    async with InsperaClient(settings_for(inspera), API_KEY) as client:
        with pytest.raises(InsperaApiError, match="export job job-7 failed: FAILED"):
            await client.wait_for_export("1")


async def test_a_job_that_never_ends_times_out(inspera: FakeInspera) -> None:
    inspera.states = [{"status": "RUNNING", "progress": 1}]
    settings = settings_for(inspera, export_timeout_seconds=0.2)
    async with InsperaClient(settings, API_KEY) as client:
        with pytest.raises(InsperaApiError, match="not done after"):
            await client.wait_for_export("1")
    assert len(inspera.polls) >= 1


async def test_a_done_job_without_url_is_an_error(inspera: FakeInspera) -> None:
    inspera.states = [{"status": "FINISHED"}]
    async with InsperaClient(settings_for(inspera), API_KEY) as client:
        with pytest.raises(InsperaApiError, match="names no download URL"):
            await client.wait_for_export("1")


async def test_field_and_status_names_are_settings(inspera: FakeInspera) -> None:
    inspera.job_reply = {"data": {"id": "j-9", "state": "queued"}}
    inspera.states = [{"data": {"state": "ready", "done": 100, "link": inspera.file_url("x")}}]
    settings = settings_for(
        inspera,
        job_id_field="data.id",
        status_field="data.state",
        progress_field="data.done",
        url_keys=("data.link",),
        done_statuses=("READY",),
        failed_statuses=("BROKEN",),
    )
    async with InsperaClient(settings, API_KEY) as client:
        status = await client.wait_for_export("1")
    # The fake answers its own `jobId` too; the configured path is what is read.
    assert inspera.polls == ["j-9"]
    assert (status.status, status.progress, status.url) == ("READY", 100.0, inspera.file_url("x"))


def test_the_client_needs_a_base_url_and_client_id() -> None:
    with pytest.raises(ConfigError, match="api_base_url"):
        InsperaClient(InsperaSettings(), API_KEY)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_pipe_is_one_line_per_tenth() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, width=10)
    for done in range(0, 101, 5):
        bar.update("publishing", done, 100)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1].startswith("publishing   [##########] 100.0%")


def test_progress_on_a_terminal_rewrites_its_line() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, width=4)
    bar.update("downloading", 512, 2048, "B")
    bar.update("downloading", 2048, 2048, "B")
    bar.update("publishing", 3, None)
    bar.finish()
    assert stream.getvalue() == (
        "\rdownloading  [#---]  25.0%  512 B / 2.0 KiB"
        "\rdownloading  [####] 100.0%  2.0 KiB / 2.0 KiB\n"
        "\rpublishing   3\n"
    )


def test_a_disabled_bar_prints_nothing() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, enabled=False)
    bar.update("x", 1, 2)
    bar.finish()
    assert stream.getvalue() == ""
