"""The export downloader against real loopback HTTP servers: the allow-list, https only,
redirects only to allowed hosts, the size limit, and which failures are worth a retry.

`FileServer` (tests/support/http.py) is also what the integration tests serve export files with.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.vendors.inspera.exports import (
    DownloadError,
    ExportDownloader,
    checked_url,
    host_allowed,
)
from gateway.vendors.inspera.settings import InsperaSettings
from tests.support.http import FileServer, Route, free_port


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as running:
        yield running


LOOPBACK = InsperaSettings(
    download_hosts=("127.0.0.1",), allow_http_downloads=True, allow_private_addresses=True
)


async def download(settings: InsperaSettings, url: str, tmp_path: Path) -> bytes:
    target = tmp_path / "export.json"
    size = await ExportDownloader(settings).download(url, target)
    data = target.read_bytes()
    assert size == len(data)
    return data


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("bucket.s3.eu-west-1.amazonaws.com", True),
        ("BUCKET.S3.AMAZONAWS.COM", True),
        ("amazonaws.com", False),  # `*.x` is for subdomains only
        ("evilamazonaws.com", False),
        ("amazonaws.com.evil.org", False),
        ("uni.inspera.no", True),
        ("uni.inspera.no.", True),
        ("inspera.no", False),
        ("127.0.0.1", False),
    ],
)
def test_host_allow_list(host: str, allowed: bool) -> None:
    assert host_allowed(host, InsperaSettings().download_hosts) is allowed


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://bucket.s3.amazonaws.com/e.json?X-Amz-Signature=1", "http_not_allowed"),
        ("https://evil.example.org/e.json", "host_not_allowed"),
        ("https://user:pw@bucket.s3.amazonaws.com/e.json", "credentials_in_url"),
        ("ftp://bucket.s3.amazonaws.com/e.json", "invalid_url"),
        ("not a url", "invalid_url"),
    ],
)
def test_refused_urls_are_not_retryable(url: str, reason: str) -> None:
    with pytest.raises(DownloadError) as refused:
        checked_url(url, InsperaSettings())
    assert refused.value.reason == reason
    assert not refused.value.retryable
    assert "Signature" not in str(refused.value)


def test_https_on_an_allowed_host_passes() -> None:
    url = "https://bucket.s3.eu-west-1.amazonaws.com/e.json?X-Amz-Signature=abc"
    assert checked_url(url, InsperaSettings()).host == "bucket.s3.eu-west-1.amazonaws.com"


async def test_downloads_a_file(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/export.json", b'{"candidates": []}')
    assert await download(LOOPBACK, url + "?X-Amz-Signature=s", tmp_path) == b'{"candidates": []}'
    assert server.requests == ["/export.json"]


async def test_a_host_not_allowed_is_never_contacted(server: FileServer, tmp_path: Path) -> None:
    url = server.serve("/export.json", b"{}")
    settings = InsperaSettings(
        download_hosts=("localhost",), allow_http_downloads=True, allow_private_addresses=True
    )
    with pytest.raises(DownloadError, match="host_not_allowed"):
        await download(settings, url, tmp_path)
    assert server.requests == []


async def test_redirects_are_followed_to_allowed_hosts(server: FileServer, tmp_path: Path) -> None:
    server.serve("/export.json", b"[1]")
    server.routes["/moved"] = Route(302, headers={"Location": "/export.json"})
    assert await download(LOOPBACK, server.url("/moved"), tmp_path) == b"[1]"
    assert server.requests == ["/moved", "/export.json"]


async def test_a_redirect_elsewhere_is_refused(server: FileServer, tmp_path: Path) -> None:
    with FileServer() as elsewhere:
        elsewhere.serve("/export.json", b"[1]")
        # `localhost` is the same machine, but not on this allow-list.
        location = elsewhere.url("/export.json", host="localhost")
        server.routes["/moved"] = Route(307, headers={"Location": location})
        with pytest.raises(DownloadError) as refused:
            await download(LOOPBACK, server.url("/moved"), tmp_path)
        assert refused.value.reason == "host_not_allowed"
        assert refused.value.host == "localhost"
        assert elsewhere.requests == []


async def test_redirect_loops_end(server: FileServer, tmp_path: Path) -> None:
    server.routes["/loop"] = Route(302, headers={"Location": "/loop"})
    settings = InsperaSettings(
        download_hosts=("127.0.0.1",),
        allow_http_downloads=True,
        allow_private_addresses=True,
        max_redirects=2,
    )
    with pytest.raises(DownloadError, match="too_many_redirects"):
        await download(settings, server.url("/loop"), tmp_path)
    assert server.requests == ["/loop"] * 3


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_a_file_over_the_size_limit_is_refused(
    server: FileServer, tmp_path: Path, declared: bool
) -> None:
    url = server.serve("/big.json", b"x" * 5000, length=declared)
    settings = InsperaSettings(
        download_hosts=("127.0.0.1",),
        allow_http_downloads=True,
        allow_private_addresses=True,
        max_export_bytes=4096,
    )
    with pytest.raises(DownloadError) as refused:
        await download(settings, url, tmp_path)
    assert refused.value.reason == "too_large"
    assert not refused.value.retryable


@pytest.mark.parametrize(
    ("status", "retryable"), [(403, False), (404, False), (429, True), (503, True)]
)
async def test_http_errors(
    server: FileServer, tmp_path: Path, status: int, retryable: bool
) -> None:
    server.routes["/export.json"] = Route(status, b"no")
    with pytest.raises(DownloadError) as failed:
        await download(LOOPBACK, server.url("/export.json"), tmp_path)
    assert failed.value.reason == f"http_{status}"
    assert failed.value.retryable is retryable


async def test_a_server_that_is_down_is_worth_a_retry(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/export.json"
    with pytest.raises(DownloadError) as failed:
        await download(LOOPBACK, url, tmp_path)
    assert failed.value.reason.startswith("transport_")
    assert failed.value.retryable


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"], ids=["address", "name"])
async def test_private_addresses_are_refused_outside_dev(
    server: FileServer, tmp_path: Path, host: str
) -> None:
    """No SSRF: a host that is, or resolves to, a non-public address is never contacted."""
    url = server.serve("/export.json", b"{}").replace("127.0.0.1", host)
    settings = InsperaSettings(download_hosts=(host,), allow_http_downloads=True)
    with pytest.raises(DownloadError) as refused:
        await download(settings, url, tmp_path)
    assert refused.value.reason == "private_address"
    assert not refused.value.retryable
    assert server.requests == []
