"""Node deaths, graceful stops, takeover races and expiry across nodes."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from redis.asyncio import Redis

from gw.sip.endpoint import SipEndpoint
from tests.cluster.test_multinode import send_message, start_nodes, stop_all
from tests.support.msrp_user import MsrpUser
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop


async def records(url: str) -> list[dict[bytes, bytes]]:
    redis = Redis.from_url(url)
    try:
        return [await redis.hgetall(k) async for k in redis.scan_iter(match="msrpgw:sess:*")]
    finally:
        await redis.aclose()


class Events:
    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[dict[str, object]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Events:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._run(ready))
        await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, ready: asyncio.Event) -> None:
        redis = Redis.from_url(self.url)
        pubsub = redis.pubsub()
        await pubsub.subscribe("msrpgw:events")
        ready.set()
        try:
            while True:
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg is not None:
                    self.seen.append(json.loads(msg["data"]))
        finally:
            await pubsub.aclose()
            await redis.aclose()

    def named(self, name: str) -> list[dict[str, object]]:
        return [e for e in self.seen if e["event"] == name]


async def eventually(check: object, timeout: float = 8.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if callable(check) and check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")


async def test_two_nodes_race_to_take_over_one_invite(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 3)
    try:
        assert await send_message(page_ua, nodes[0], "first") == 200
        nodes[0].stop(signal.SIGKILL)
        await asyncio.sleep(2.0)  # heartbeat TTL 1.5 s: gw1 is now dead to the others
        results = await asyncio.gather(
            send_message(page_ua, nodes[1], "race-b"), send_message(page_ua, nodes[2], "race-c")
        )
        assert results == [200, 200], [n.output()[-2000:] for n in nodes[1:]]
        assert len(msrp_user.invites) == 2, "exactly one takeover INVITE"
        owners = {r[b"owner"] for r in await records(redis_server.url)}
        assert len(owners) == 1 and owners <= {b"gw2", b"gw3"}
    finally:
        await stop_all(nodes)


async def test_sigterm_hands_over_cleanly(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 2)
    try:
        assert await send_message(page_ua, nodes[0], "one") == 200
        # In a thread: the MSRP user in this event loop must be free to answer the BYE.
        assert await asyncio.to_thread(nodes[0].stop, signal.SIGTERM) == 0
        assert msrp_user.byes == 1
        assert all(r.get(b"owner") != b"gw1" for r in await records(redis_server.url))
        assert await send_message(page_ua, nodes[1], "two") == 200
        assert len(msrp_user.invites) == 2
        assert [r.body for r in await msrp_user.wait_for(2)] == [b"one", b"two"]
    finally:
        await stop_all(nodes)


async def test_owner_killed_mid_stream_accounting_holds(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 2)
    answered: dict[str, int] = {}
    try:
        assert await send_message(page_ua, nodes[0], "start") == 200  # gw1 owns the key

        async def flow() -> None:
            for i in range(60):
                body = f"flow{i}"
                answered[body] = await send_message(page_ua, nodes[1], body)
                await asyncio.sleep(0.05)

        task = asyncio.create_task(flow())
        await asyncio.sleep(0.6)
        nodes[0].stop(signal.SIGKILL)
        await task
        delivered = {r.body.decode() for r in msrp_user.received}
        ok = {b for b, code in answered.items() if 200 <= code < 300}
        assert ok <= delivered, f"2xx without delivery: {sorted(ok - delivered)}"
        assert all(code == 200 or code >= 400 for code in answered.values())
        assert answered["flow59"] == 200, "the flow resumed through the survivor"
        assert any(code >= 400 for code in answered.values()) or len(msrp_user.invites) == 2
    finally:
        await stop_all(nodes)


async def test_expiry_of_a_dead_owners_session_is_cleaned_up_by_another_node(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(
        redis_server,
        msrp_user,
        2,
        MSRPGW_GATEWAY__SESSION_TIMEOUT="2",
        MSRPGW_GATEWAY__MESSAGE_TIMEOUT="2",
        MSRPGW_GATEWAY__CLEANUP_INTERVAL="1",
    )
    try:
        async with Events(redis_server.url) as events:
            assert await send_message(page_ua, nodes[0], "x") == 200
            nodes[0].stop(signal.SIGKILL)
            await eventually(lambda: bool(events.named("E_MSRP_GW_SESSION_ENDED")), 10)
            ended = events.named("E_MSRP_GW_SESSION_ENDED")[0]
            assert ended["node"] == "gw2"
            assert ended["data"]["reason"] == "expired"  # type: ignore[index]
        assert await records(redis_server.url) == []
    finally:
        await stop_all(nodes)


async def test_sweep_catches_expiry_when_notifications_are_off(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(
        redis_server,
        msrp_user,
        1,
        MSRPGW_GATEWAY__SESSION_TIMEOUT="1",
        MSRPGW_GATEWAY__MESSAGE_TIMEOUT="1",
        MSRPGW_GATEWAY__CLEANUP_INTERVAL="1",
    )
    try:
        redis = Redis.from_url(redis_server.url)
        await redis.config_set("notify-keyspace-events", "")
        await redis.aclose()
        assert await send_message(page_ua, nodes[0], "x") == 200
        await eventually(lambda: msrp_user.byes == 1, 6)
        assert await records(redis_server.url) == []
    finally:
        await stop_all(nodes)
