"""Redis killed and restarted under load: nodes stay up, answer 503 meanwhile, recover alone."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from gw.sip.endpoint import SipEndpoint
from gw.sip.transaction import Address
from tests.cluster.test_multinode import start_nodes, stop_all
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop


async def message(ua: SipEndpoint, node: GatewayProcess, body: str) -> tuple[int, str | None]:
    host, port = node.sip("udp")
    req = ua.new_request(
        "MESSAGE",
        f"sip:bob@{host}:{port}",
        from_="<sip:alice@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=body.encode(),
        content_type="text/plain",
    )
    response = await ua.request(req, Address("UDP", host, port))
    return response.status, response.get("Retry-After")


async def test_redis_restart_under_load(
    redis_server: RedisServer, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start_nodes(redis_server, msrp_user, 2)
    try:
        assert (await message(page_ua, nodes[0], "m0"))[0] == 200
        redis_server.kill()
        outage = [await message(page_ua, nodes[i % 2], f"down{i}") for i in range(6)]
        assert all(code == 503 and retry is not None for code, retry in outage), outage
        assert all(n.proc is not None and n.proc.poll() is None for n in nodes), "a node exited"
        redis_server.restart()
        codes: list[int] = []
        for i in range(40):
            code, _ = await message(page_ua, nodes[0], f"up{i}")
            codes.append(code)
            if code == 200:
                break
            await asyncio.sleep(0.25)
        assert codes[-1] == 200, (codes, nodes[0].output()[-3000:])
        # The owner rebuilt the record from its live session: no new INVITE was needed.
        assert len(msrp_user.invites) == 1
        redis = Redis.from_url(redis_server.url)
        assert [k async for k in redis.scan_iter(match="msrpgw:sess:*")]
        await redis.aclose()
        # Both nodes serve again, through the owner. The other node may still be
        # resubscribing its inbox a moment after the owner is back: it answers 503 with
        # Retry-After meanwhile (as a client would, retry), and delivers none of those.
        other: list[int] = []
        for i in range(20):
            code, retry = await message(page_ua, nodes[1], f"via-other-node{i}")
            other.append(code)
            if code != 503:
                break
            assert retry is not None
            await asyncio.sleep(0.25)
        assert other[-1] == 200, (other, nodes[1].output()[-3000:])
        bodies = [r.body for r in await msrp_user.wait_for(3)]
        assert bodies[0] == b"m0"
        via_other = [b for b in bodies if b.startswith(b"via-other-node")]
        assert via_other == [f"via-other-node{len(other) - 1}".encode()], bodies
        assert not any(b.startswith(b"down") for b in bodies), "503-answered messages leaked"
    finally:
        await stop_all(nodes)
