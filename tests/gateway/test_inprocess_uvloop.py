"""In-process checks that depend on the event loop, on uvloop: the loop `msrp-gw run` uses.

Its handles are no `asyncio.TimerHandle`: an adapter that tested for one never cancelled
the delivery timers, so each message kept its session and its transaction alive for
`delivery_timeout` (found here; the default loop of the other in-process tests hid it).
Each test runs its own uvloop loop (`uvloop.run`), with the node and users built on it.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
from collections.abc import Awaitable, Callable

import uvloop

from gw.gateway.session import GwSession, Pending
from gw.node import Node
from tests.gateway.test_inprocess import KEY, InProcess, node_config
from tests.support.msrp_user import MsrpUser
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer

Scenario = Callable[[InProcess, MsrpUser, PageUser], Awaitable[None]]


def run_on_uvloop(redis_server: RedisServer, scenario: Scenario) -> None:
    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        msrp_user, page = MsrpUser(), PageUser()
        await msrp_user.start()
        await page.start()
        with tempfile.TemporaryDirectory(prefix="gw-uvloop-") as state_dir:
            cfg = node_config(redis_server.url, msrp_user, state_dir)
            cfg.validate()
            node = Node(cfg)
            await node.start()
            try:
                await scenario(InProcess(node), msrp_user, page)
            finally:
                await node.stop()
                await page.close()
                await msrp_user.close()

    uvloop.run(main())


def test_answered_messages_leave_no_pending_behind(redis_server: RedisServer) -> None:
    async def scenario(node: InProcess, msrp_user: MsrpUser, page: PageUser) -> None:
        for i in range(5):
            response = await page.message(node, msrp_user.uri("bob"), f"m{i}".encode())
            assert response.status == 200
        await asyncio.sleep(0.05)
        gc.collect()
        assert [o for o in gc.get_objects() if isinstance(o, Pending)] == [], "timers cancelled"

    run_on_uvloop(redis_server, scenario)


def test_ended_session_is_freed_without_the_cyclic_collector(redis_server: RedisServer) -> None:
    async def scenario(node: InProcess, msrp_user: MsrpUser, page: PageUser) -> None:
        response = await page.message(node, msrp_user.uri("bob"), b"hello")
        assert response.status == 200
        gc.collect()
        gc.disable()
        try:
            assert await node.gw.end_session(KEY, "test")
            await asyncio.sleep(0.3)
            left = [o for o in gc.get_objects() if isinstance(o, GwSession)]
            assert left == [], "an ended session must not wait for the cyclic GC"
        finally:
            gc.enable()

    run_on_uvloop(redis_server, scenario)
