"""/healthz, /readyz (readiness callback, sync or async) and /metrics over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gw.mgmt import Limits, MgmtServer, ReadyCheck
from tests.mgmt.helpers import get


async def _served(ready: ReadyCheck | None) -> tuple[int, bytes]:
    srv = MgmtServer("127.0.0.1:0", ready=ready, limits=Limits(ready_timeout=0.3))
    await srv.start()
    try:
        resp = await get(srv.port, "/readyz")
        return resp.status, resp.body
    finally:
        await srv.close()


async def _async_true() -> bool:
    return True


async def _async_reason() -> str:
    return "store unreachable"


async def _hangs() -> bool:
    await asyncio.sleep(30)
    return True


def _raises() -> bool:
    raise ConnectionError("redis down")


@pytest.mark.parametrize(
    ("ready", "status", "body"),
    [
        (None, 200, b"ready\n"),
        (lambda: True, 200, b"ready\n"),
        (lambda: False, 503, b"not ready\n"),
        (lambda: "draining", 503, b"draining\n"),
        (lambda: "", 503, b"not ready\n"),
        (_async_true, 200, b"ready\n"),
        (_async_reason, 503, b"store unreachable\n"),
        (_hangs, 503, b"readiness check timed out\n"),
        (_raises, 503, b"readiness check failed: ConnectionError\n"),
    ],
)
async def test_readyz(ready: ReadyCheck | None, status: int, body: bytes) -> None:
    assert await _served(ready) == (status, body)


async def test_readyz_follows_the_callback() -> None:
    state = {"ready": False}
    srv = MgmtServer("127.0.0.1:0", ready=lambda: state["ready"])
    await srv.start()
    try:
        assert (await get(srv.port, "/readyz")).status == 503
        state["ready"] = True
        assert (await get(srv.port, "/readyz")).status == 200
        assert (await get(srv.port, "/healthz")).status == 200
    finally:
        await srv.close()


async def test_metrics_endpoint(server: MgmtServer) -> None:
    server.metrics.counter("gw_sip_messages_total", "SIP MESSAGEs", ["direction"]).labels(
        direction="in"
    ).inc(3)
    resp = await get(server.port, "/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    (family,) = text_string_to_metric_families(resp.body.decode())
    assert family.type == "counter"
    assert [(s.labels, s.value) for s in family.samples] == [({"direction": "in"}, 3.0)]


async def test_metrics_empty_registry(server: MgmtServer) -> None:
    resp = await get(server.port, "/metrics")
    assert (resp.status, resp.body) == (200, b"")
