"""Several real `msrp-gw run` nodes sharing one Redis, fed round-robin as by a load balancer."""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from redis.asyncio import Redis

from gw.sip.endpoint import SipEndpoint
from gw.sip.transaction import Address
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop


def start_nodes(
    redis_server: RedisServer, msrp_user: MsrpUser, count: int, **env: str
) -> list[GatewayProcess]:
    nodes = []
    for i in range(count):
        node = GatewayProcess(
            env={
                "MSRPGW_STORE__URL": redis_server.url,
                "MSRPGW_NODE__ID": f"gw{i + 1}",
                "MSRPGW_SIP__T1": "0.1",
                "MSRPGW_SIP__T2": "0.4",
                "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{msrp_user.sip_port}",
                "MSRPGW_GATEWAY__SETUP_TIMEOUT": "3",
                "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
                "MSRPGW_CLUSTER__HEARTBEAT_TTL": "1.5",
                **env,
            }
        )
        node.start()
        nodes.append(node)
    return nodes


async def send_message(
    ua: SipEndpoint, node: GatewayProcess, body: str, user: str = "alice"
) -> int:
    host, port = node.sip("udp")
    req = ua.new_request(
        "MESSAGE",
        f"sip:bob@{host}:{port}",
        from_=f"<sip:{user}@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=body.encode(),
        content_type="text/plain",
    )
    response = await ua.request(req, Address("UDP", host, port))
    return response.status


async def stop_all(nodes: list[GatewayProcess]) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            await asyncio.to_thread(node.stop)


async def test_round_robin_one_session_in_order(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 3)
    try:
        statuses = [await send_message(page_ua, nodes[i % 3], f"m{i}") for i in range(12)]
        assert statuses == [200] * 12, [n.output()[-2000:] for n in nodes]
        received = await msrp_user.wait_for(12)
        assert [r.body for r in received] == [f"m{i}".encode() for i in range(12)]
        assert len(msrp_user.invites) == 1, "one INVITE, one MSRP session for the key"
        redis = Redis.from_url(redis_server.url)
        keys = [k async for k in redis.scan_iter(match="msrpgw:sess:*")]
        await redis.aclose()
        assert len(keys) == 1
    finally:
        await stop_all(nodes)


async def test_owner_killed_session_taken_over(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 2)
    redis = Redis.from_url(redis_server.url)
    pubsub = redis.pubsub()
    await pubsub.subscribe("msrpgw:events")
    try:
        assert await send_message(page_ua, nodes[0], "before") == 200
        nodes[0].stop(signal.SIGKILL)
        # While the owner's heartbeat lives on, a MESSAGE gets an error, never a false 2xx.
        statuses = []
        for i in range(30):
            status = await send_message(page_ua, nodes[1], f"after{i}")
            statuses.append(status)
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert statuses[-1] == 200, nodes[1].output()[-3000:]
        assert all(s in (200, 408, 480, 503, 504) for s in statuses)
        assert len(msrp_user.invites) == 2, "the survivor set up a new MSRP leg"
        bodies = [r.body for r in msrp_user.received]
        assert b"before" in bodies and bodies[-1].startswith(b"after")
        moved = None
        for _ in range(25):
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None and json.loads(msg["data"])["event"] == "E_MSRP_GW_SESSION_MOVED":
                moved = json.loads(msg["data"])
                break
        assert moved is not None
        assert moved["data"]["from_node"] == "gw1" and moved["data"]["to_node"] == "gw2"
    finally:
        await pubsub.aclose()
        await redis.aclose()
        await stop_all(nodes)
