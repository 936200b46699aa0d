"""`gw.store.client.connect`: URL forms, defaults, and a real Sentinel with a failover
(master + replica + one `redis-server --sentinel`, about 2 s)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import TimeoutError as RedisTimeoutError

from gw.store import ExpiryListener, SessionRecord, SessionStore, connect
from gw.store.client import DEFAULTS, ClusterUnavailable, StoreCluster, StoreClusterPipeline
from tests.support.redis_cluster import LocalSentinel
from tests.support.redis_server import RedisServer


def pool_kwargs(client: Redis) -> dict[str, object]:
    return dict(client.connection_pool.connection_kwargs)


async def test_single_server_urls() -> None:
    client = connect("redis://u:p%40ss@db.example:6380/2?socket_timeout=1.5")
    assert isinstance(client, Redis) and type(client) is Redis
    kw = pool_kwargs(client)
    assert (kw["host"], kw["port"], kw["db"]) == ("db.example", 6380, 2)
    assert (kw["username"], kw["password"]) == ("u", "p@ss")
    assert kw["socket_timeout"] == 1.5  # the URL wins over the defaults
    assert kw["socket_connect_timeout"] == DEFAULTS["socket_connect_timeout"]
    assert kw["health_check_interval"] == DEFAULTS["health_check_interval"]
    retry = kw["retry"]
    assert retry.get_retries() == 3  # type: ignore[attr-defined]
    await client.aclose()

    tls = connect("rediss://db.example", socket_timeout=9)
    assert isinstance(tls, Redis)
    assert issubclass(tls.connection_pool.connection_class, SSLConnection)
    assert pool_kwargs(tls)["socket_timeout"] == 9  # kwargs win over the defaults
    await tls.aclose()

    unix = connect("unix:///run/redis.sock?db=1")
    assert isinstance(unix, Redis)
    assert issubclass(unix.connection_pool.connection_class, UnixDomainSocketConnection)
    assert pool_kwargs(unix)["path"] == "/run/redis.sock" and pool_kwargs(unix)["db"] == 1
    await unix.aclose()

    class Counting(Redis):
        pass

    assert type(connect("redis://h", redis_class=Counting)) is Counting


async def test_cluster_urls() -> None:
    client = connect("redis+cluster://a:pw@n1.example:7000,n2.example:7001,[::1]:7002")
    assert isinstance(client, StoreCluster)
    assert RedisTimeoutError not in client.ERRORS_ALLOW_RETRY  # a timed-out command may have run
    startup = client.nodes_manager.startup_nodes
    assert sorted(startup) == ["::1:7002", "n1.example:7000", "n2.example:7001"]
    kw = client.nodes_manager.connection_kwargs
    assert (kw["username"], kw["password"]) == ("a", "pw")
    assert kw["socket_timeout"] == DEFAULTS["socket_timeout"]
    assert kw["max_connections"] == 1000
    tls = connect("rediss+cluster://n1.example:7000?ssl_cert_reqs=none")
    assert isinstance(tls, RedisCluster)
    assert issubclass(tls.nodes_manager.connection_kwargs["connection_class"], SSLConnection)
    assert tls.nodes_manager.connection_kwargs["ssl_cert_reqs"] == "none"
    assert isinstance(client.pipeline(), StoreClusterPipeline)
    with pytest.raises(ClusterUnavailable):  # no slot map yet: no node serves the slot
        client.get_node_from_key("k")
    for bad in (
        "redis+cluster://n1.example",  # no port
        "redis+cluster://n1.example:7000/3",  # only db 0
        "redis+cluster://",
    ):
        with pytest.raises(ValueError):
            connect(bad)


async def test_sentinel_urls() -> None:
    client = connect(
        "redis+sentinel://u:pw@s1.example:26379,s2.example:26380/mymaster/3"
        "?sentinel_password=spw&socket_timeout=2"
    )
    assert isinstance(client, Redis) and type(client) is Redis
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    kw = pool_kwargs(client)
    assert (kw["username"], kw["password"], kw["db"]) == ("u", "pw", 3)
    assert kw["socket_timeout"] == 2
    sentinels = pool.sentinel_manager.sentinels
    skw = [pool_kwargs(s) for s in sentinels]
    assert [(k["host"], k["port"]) for k in skw] == [("s1.example", 26379), ("s2.example", 26380)]
    assert all(k["password"] == "spw" and k["socket_timeout"] == 2 for k in skw)
    for bad in (
        "redis+sentinel://s1.example:26379",  # no service
        "redis+sentinel://s1.example:26379/m/x",  # db not a number
        "redis+sentinel://s1.example:26379/m/1/2",
    ):
        with pytest.raises(ValueError):
            connect(bad)
    with pytest.raises(ValueError, match="redis\\+cluster://"):
        connect("http://example.com")


@pytest.fixture
def sentinel_setup() -> Iterator[tuple[RedisServer, RedisServer, LocalSentinel]]:
    with RedisServer(options={"repl-diskless-sync-delay": "0"}) as master:
        replica = RedisServer(options={"replicaof": f"127.0.0.1 {master.port}"})
        with replica:
            deadline = time.monotonic() + 10
            with replica.client() as c:  # in sync before the sentinel looks at the master
                while c.info("replication").get("master_link_status") != "up":
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            with master.client() as c:
                while not c.info("replication").get("connected_slaves"):
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            with LocalSentinel(master.port or 0) as sentinel:
                yield master, replica, sentinel
        master.kill()  # a graceful stop would wait for the replica to catch up


async def test_sentinel_store_and_failover(
    sentinel_setup: tuple[RedisServer, RedisServer, LocalSentinel],
) -> None:
    master, replica, sentinel = sentinel_setup
    client = connect(sentinel.url)
    store = SessionStore(client, prefix="s", session_timeout=0.3, message_timeout=60)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_expired(key: str) -> None:
        seen.put_nowait(key)

    listener = ExpiryListener(client, on_expired, prefix="s", ping_interval=0.5, max_backoff=0.5)
    await listener.start()
    try:
        await listener.wait_ready(5)
        assert await store.create(SessionRecord(key="before", owner="gw1"))
        assert await asyncio.wait_for(seen.get(), 5) == "before"
        assert await client.set("x", "1")
        with master.client() as c:
            assert c.get("x") == b"1"  # it went to the master

        # a replica sees the sentinel's master only after the sentinel found it
        deadline = time.monotonic() + 15
        with sentinel.client() as s:
            while not s.sentinel_slaves(sentinel.service):
                assert time.monotonic() < deadline, "sentinel never saw the replica"
                await asyncio.sleep(0.1)
            s.execute_command("SENTINEL FAILOVER", sentinel.service)
            while int(s.sentinel_get_master_addr_by_name(sentinel.service)[1]) != replica.port:
                assert time.monotonic() < deadline, "no failover"
                await asyncio.sleep(0.1)
        with replica.client() as c:
            while c.info("replication")["role"] != "master":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        # The sentinel demotes a live old master only at its next INFO poll (up to 10 s);
        # until then it still takes writes (Sentinel's known window). Here it dies instead.
        master.kill()

        # the client follows the new master; so does the listener (re-subscribes there)
        deadline = time.monotonic() + 15
        while True:
            try:
                await client.set("y", "2")
                break
            except Exception:  # READONLY / connection reset while the roles switch
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        with replica.client() as c:
            assert c.get("y") == b"2"
        deadline = time.monotonic() + 15
        while True:
            with replica.client() as c:
                listening = any(int(cl.get("psub", 0)) > 0 for cl in c.client_list())
            if listening and listener.ready:
                break
            assert time.monotonic() < deadline, "the listener never moved to the new master"
            await asyncio.sleep(0.1)
        assert await store.create(SessionRecord(key="after", owner="gw1"))
        assert await asyncio.wait_for(seen.get(), 5) == "after"
    finally:
        await listener.stop()
        await client.aclose()
