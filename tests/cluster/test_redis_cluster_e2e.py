"""The gateway on a 3-primary Redis Cluster: the multi-node flows and expiry of a single Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from redis.asyncio import RedisCluster

from gw.sip.endpoint import SipEndpoint
from gw.store.client import connect
from tests.cluster.test_multinode import send_message, stop_all
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.redis_cluster import LocalCluster

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def start(cluster: LocalCluster, user: MsrpUser, count: int, **env: str) -> list[GatewayProcess]:
    nodes = []
    for i in range(count):
        node = GatewayProcess(
            env={
                "MSRPGW_STORE__URL": cluster.url,
                "MSRPGW_NODE__ID": f"c{i + 1}",
                "MSRPGW_SIP__T1": "0.1",
                "MSRPGW_SIP__T2": "0.4",
                "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{user.sip_port}",
                "MSRPGW_GATEWAY__SETUP_TIMEOUT": "3",
                "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
                "MSRPGW_CLUSTER__HEARTBEAT_TTL": "1.5",
                **env,
            }
        )
        node.start()
        nodes.append(node)
    return nodes


async def session_count(url: str) -> int:
    client = connect(url)
    assert isinstance(client, RedisCluster)
    try:
        return len([k async for k in client.scan_iter(match="msrpgw:sess:*")])
    finally:
        await client.aclose()


async def test_round_robin_and_many_keys_on_redis_cluster(
    cluster: LocalCluster, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start(cluster, msrp_user, 3)
    try:
        # One conversation over all nodes: one session, in order.
        statuses = [await send_message(page_ua, nodes[i % 3], f"m{i}") for i in range(9)]
        assert statuses == [200] * 9
        # Twelve more keys: their hashes land on all three primaries.
        for i in range(12):
            assert await send_message(page_ua, nodes[i % 3], f"k{i}", user=f"user{i}") == 200
        received = await msrp_user.wait_for(21)
        assert [r.body for r in received[:9]] == [f"m{i}".encode() for i in range(9)]
        assert len(msrp_user.invites) == 13
        assert await session_count(cluster.url) == 13
    finally:
        await stop_all(nodes)


async def test_expiry_on_redis_cluster(
    cluster: LocalCluster, msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    nodes = start(
        cluster,
        msrp_user,
        2,
        MSRPGW_GATEWAY__SESSION_TIMEOUT="2",
        MSRPGW_GATEWAY__MESSAGE_TIMEOUT="2",
        MSRPGW_GATEWAY__CLEANUP_INTERVAL="30",  # notifications, not the sweep, must do it
    )
    try:
        for i in range(6):
            assert await send_message(page_ua, nodes[i % 2], "x", user=f"exp{i}") == 200
        for _ in range(80):
            if msrp_user.byes == 6:
                break
            await asyncio.sleep(0.1)
        assert msrp_user.byes == 6, [n.output()[-1500:] for n in nodes]
        assert await session_count(cluster.url) == 0
    finally:
        await stop_all(nodes)


async def test_store_metrics_count_on_redis_cluster(
    msrp_user: MsrpUser, page_ua: SipEndpoint
) -> None:
    """Command latency and store errors are counted on a cluster too (they read 0 there)."""
    with LocalCluster(3) as own:
        (node,) = start(own, msrp_user, 1)
        try:
            assert await send_message(page_ua, node, "hello", user="metrics") == 200
            assert node.metric("msrpgw_redis_command_seconds_count") >= 2  # create, activate
            assert node.metric("msrpgw_store_errors_total") == 0
            for server in own.servers:
                server.kill()  # heartbeats fail from now on
            for _ in range(100):
                if node.metric("msrpgw_store_errors_total") > 0:
                    break
                await asyncio.sleep(0.1)
            assert node.metric("msrpgw_store_errors_total") > 0, node.output()[-2000:]
        finally:
            await asyncio.to_thread(node.stop, timeout=30)
