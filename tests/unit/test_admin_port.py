"""Which port answers what, in the app itself (the real app over ASGI, no server): requests are
told apart by the local port they arrived on, which uvicorn gives the app as `server`. The
running gateway is tested in tests/integration/test_admin_port.py.
"""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from tests.support.gateway import ROOT

OPERATIONAL = ("/healthz", "/metrics", "/openapi.json")


@pytest.fixture
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    environ = {"GATEWAY_SERVER_STATE_DIR": str(state)}
    return load_settings(ROOT / "gateway.dev.toml", environ=environ)


async def get(settings: Settings, port: int, path: str) -> httpx.Response:
    # ASGITransport runs no lifespan: enough for routing, metrics and the document.
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://gateway:{port}") as http:
        return await http.get(path)


def test_the_admin_port_is_on_by_default(settings: Settings) -> None:
    assert settings.server.admin_port == 8081
    assert settings.server.admin_port != settings.server.port


@pytest.mark.parametrize("path", OPERATIONAL)
async def test_operational_endpoints_answer_on_the_admin_port_only(
    settings: Settings, path: str
) -> None:
    assert (await get(settings, settings.server.admin_port, path)).status_code == 200
    public = await get(settings, settings.server.port, path)
    unknown = await get(settings, settings.server.port, "/no-such-route")
    assert (public.status_code, public.text) == (404, unknown.text)


async def test_the_document_describes_the_routes_of_the_public_port(settings: Settings) -> None:
    with_url = replace(settings, server=replace(settings.server, public_url="https://gw.example"))
    document = (await get(with_url, settings.server.admin_port, "/openapi.json")).json()
    assert document["servers"] == [{"url": "https://gw.example"}]
    assert "/v1/caliper" in document["paths"]
    assert not set(OPERATIONAL) & set(document["paths"])


async def test_admin_port_zero_serves_everything_on_one_port(settings: Settings) -> None:
    one_port = replace(settings, server=replace(settings.server, admin_port=0))
    for path in OPERATIONAL:
        assert (await get(one_port, one_port.server.port, path)).status_code == 200, path
    document = (await get(one_port, one_port.server.port, "/openapi.json")).json()
    assert set(OPERATIONAL) <= set(document["paths"])
