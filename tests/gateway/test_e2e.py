"""End to end: a real `msrp-gw run` process, a real Redis, SIPp as the page-mode user,
and a gw.msrp client as the session-mode user. They talk only over SIP, MSRP and Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess, start_test_node, stop_nodes
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer
from tests.support.sipp import Sipp

pytestmark = pytest.mark.interop


def start_gateway(redis_server: RedisServer, msrp_user: MsrpUser, **env: str) -> GatewayProcess:
    return start_test_node(redis_server.url, "gw-test", msrp_user.sip_port, **env)


async def stop(node: GatewayProcess) -> None:
    await stop_nodes(node)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_page_to_session_mode(
    redis_server: RedisServer, msrp_user: MsrpUser, transport: str
) -> None:
    node = start_gateway(redis_server, msrp_user)
    try:
        sipp = Sipp(
            "message_uac.xml",
            transport=transport[0] + "1",
            remote=node.sip(transport),
            calls=3,
            replace={"EXPECT": "200"},
            extra=["-r", "1", "-rp", "300"],
        )
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        received = await msrp_user.wait_for(3)
        assert [r.body for r in received] == [
            b"hello from sipp 1\r\n",
            b"hello from sipp 2\r\n",
            b"hello from sipp 3\r\n",
        ]
        assert all(r.content_type == "text/plain" for r in received)
        assert len(msrp_user.invites) == 1, "later MESSAGEs reuse the session"
        redis = Redis.from_url(redis_server.url)
        keys = [k async for k in redis.scan_iter(match="msrpgw:sess:*")]
        await redis.aclose()
        assert len(keys) == 1
    finally:
        await stop(node)
    assert msrp_user.byes == 1, "SIGTERM ends the session with BYE"


async def test_setup_failure_keeps_the_invite_code_and_raises_event(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    msrp_user.invite_status = 486
    node = start_gateway(redis_server, msrp_user)
    redis = Redis.from_url(redis_server.url)
    pubsub = redis.pubsub()
    await pubsub.subscribe("msrpgw:events")
    try:
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "486"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        event = None
        for _ in range(50):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                data = json.loads(msg["data"])
                if data["event"] == "E_MSRP_GW_SETUP_FAILED":
                    event = data
                    break
        assert event is not None
        assert event["data"]["code"] == 486
        assert event["data"]["reason"] == "Busy Here"
        assert event["data"]["to_uri"].startswith("sip:alice@")
        assert event["data"]["from_uri"].startswith("sip:bob@")
    finally:
        await pubsub.aclose()
        await redis.aclose()
        await stop(node)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_session_to_page_mode(
    redis_server: RedisServer, msrp_user: MsrpUser, transport: str
) -> None:
    node = start_gateway(redis_server, msrp_user)
    sipp = Sipp("message_uas.xml", transport=transport[0] + "1")
    await sipp.start()
    try:
        to = f"alice@127.0.0.1:{sipp.port}" + (";transport=tcp" if transport == "tcp" else "")
        status, handle = await msrp_user.call(node.sip("udp"), to=to)
        assert status == 200
        assert handle is not None
        outcome = await handle.send(b"hello page mode", "text/plain", success_report=True)
        assert type(outcome).__name__ == "MessageDelivered", outcome
        result = await sipp.wait()
        assert result.returncode == 0, result.errors + node.output()
        assert "hello page mode" in result.messages
        assert "Content-Type: text/plain" in result.messages
    finally:
        await stop(node)


async def test_session_to_page_mode_keeps_the_msrp_order(
    redis_server: RedisServer, msrp_user: MsrpUser, page: PageUser
) -> None:
    """MSRP delivers in order, so the MESSAGEs must go out in order: across deadline
    refreshes (due every second) and past messages too big for UDP (sent from a task: TCP
    first, here refused, then UDP, §18.1.1), which later small ones must not overtake.
    (A message of several chunks is complete, and delivered, when its last chunk is: the
    chunks of queued messages interleave.)"""
    node = start_gateway(redis_server, msrp_user)
    try:
        status, handle = await msrp_user.call(node.sip("udp"), to=page.aor())
        assert status == 200 and handle is not None
        bodies: list[bytes] = []
        for burst in range(3):
            if burst:
                await asyncio.sleep(1.1)  # the next burst starts with a refresh due
            sizes = [1800, 10, 10, 10, 1500, 10, 10]  # one chunk each (2048): MSRP keeps order
            batch = [bytes([65 + burst]) * n + f"#{len(bodies) + i}".encode() for i, n in
                     enumerate(sizes)]  # fmt: skip
            bodies += batch
            for body in batch:
                handle.send_nowait(body, "text/plain")
        got = await page.wait_for(len(bodies), timeout=15)
        assert [m.body for m in got] == bodies, node.output()
    finally:
        await stop(node)
