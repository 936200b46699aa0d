"""Bearer token: required everywhere except the probes, compared in constant time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gw.mgmt import MgmtServer
from tests.mgmt.conftest import FAST
from tests.mgmt.helpers import get, post_json

TOKEN = "s3cret-t0ken"
CALL = {"jsonrpc": "2.0", "method": "which", "id": 1}


@pytest.fixture
async def guarded() -> AsyncIterator[MgmtServer]:
    srv = MgmtServer("127.0.0.1:0", TOKEN, limits=FAST)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer \xe9"},
    ],
)
async def test_mi_without_valid_token_401(guarded: MgmtServer, headers: dict[str, str]) -> None:
    resp = await post_json(guarded.port, CALL, headers)
    assert resp.status == 401
    assert resp.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_mi_with_token_200(guarded: MgmtServer, scheme: str) -> None:
    resp = await post_json(guarded.port, CALL, {"Authorization": f"{scheme} {TOKEN}"})
    assert resp.status == 200
    assert "which" in resp.json()["result"]


async def test_metrics_needs_token(guarded: MgmtServer) -> None:
    assert (await get(guarded.port, "/metrics")).status == 401
    resp = await get(guarded.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_need_no_token(guarded: MgmtServer, path: str) -> None:
    assert (await get(guarded.port, path)).status == 200


async def test_unknown_path_does_not_leak_without_token(guarded: MgmtServer) -> None:
    assert (await get(guarded.port, "/secret-admin")).status == 401
    resp = await get(guarded.port, "/secret-admin", {"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 404


async def test_no_token_configured_means_open(server: MgmtServer) -> None:
    assert (await post_json(server.port, CALL)).status == 200
