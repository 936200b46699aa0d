"""The store, expiry, events, registry and RPC on a real 3-primary Redis Cluster.

One cluster for the module (about 2 s to form); each test uses its own key prefix. The
cluster starts with keyspace notifications off, so the listener must enable them on every
primary.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import NodeUnreachable, Rpc
from gw.store import EventBus, ExpiryListener, SessionRecord, SessionStore, connect
from gw.store.client import primaries
from tests.support.redis_cluster import LocalCluster

KEYS = [f"sip:user{i}@example.com|sip:bob@example.net" for i in range(120)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3, options={"notify-keyspace-events": ""}) as c:
        yield c


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def rc(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = connect(cluster.url)
    assert isinstance(client, RedisCluster)
    yield client
    await client.aclose()


async def node_of(client: RedisCluster, name: str) -> str:
    await client.initialize()
    node = client.get_node_from_key(name)
    assert node is not None
    return str(node.name)


async def spread(client: RedisCluster, names: list[str]) -> Counter[str]:
    """How many of `names` each primary holds."""
    return Counter([await node_of(client, n) for n in names])


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_store_operations_on_every_primary(rc: RedisCluster, prefix: str) -> None:
    store = SessionStore(rc, prefix=prefix, session_timeout=600, message_timeout=300, grace=30)
    where = await spread(rc, [store.keys.session(k) for k in KEYS])
    assert len(where) == 3 and min(where.values()) > 10, where
    for key in KEYS:
        assert await store.create(SessionRecord(key=key, owner="gw1", msg_from="sip:a@x"))
    assert not await store.create(SessionRecord(key=KEYS[0], owner="gw2"))  # exclusive
    for key in KEYS:  # the hash and the deadline share the session's slot
        names = [store.keys.session(key), store.keys.deadline(key)]
        assert len({rc.keyslot(n) for n in names}) == 1
        assert await rc.exists(*names) == 2
    now = time.time()
    await asyncio.gather(*(store.touch(k, page_message=True, now=now) for k in KEYS))
    assert await store.update(KEYS[1], state="active", peer_path=["msrp://h:1/s;tcp"])
    record = await store.get(KEYS[1])
    assert record is not None and record.state == "active"
    assert record.peer_path == ["msrp://h:1/s;tcp"] and record.last_message == now

    claimed = await asyncio.gather(
        *(store.claim(k, expected_owner="gw1", new_owner="gw2") for k in KEYS)
    )
    assert all(r is not None and r.owner == "gw2" and r.epoch == 1 for r in claimed)
    assert await store.claim(KEYS[0], expected_owner="gw1", new_owner="gw3") is None

    listed = [r async for r in store.iter_sessions(count=7)]  # small batches, all primaries
    assert sorted(r.key for r in listed) == sorted(KEYS)

    # the engine's reconcile: one pipeline of EXISTS over keys of every slot
    async with rc.pipeline(transaction=False) as pipe:
        for key in KEYS:
            pipe.exists(store.keys.session(key))
        assert await pipe.execute() == [1] * len(KEYS)

    assert not await store.delete(KEYS[0], owner="gw1")  # not the owner any more
    deleted = await asyncio.gather(*(store.delete(k, owner="gw2") for k in KEYS))
    assert all(deleted)
    assert [r async for r in store.iter_sessions()] == []


async def test_scripts_reload_after_a_primary_forgets_them(
    cluster: LocalCluster, rc: RedisCluster, prefix: str
) -> None:
    store = SessionStore(rc, prefix=prefix, session_timeout=60, message_timeout=60, grace=30)
    for key in KEYS[:30]:
        await store.create(SessionRecord(key=key, created=time.time() - 61))
    for i in range(3):  # e.g. a restart or a new primary: the script cache is empty
        with cluster.client(i) as c:
            c.script_flush()
    await store.create(SessionRecord(key="fresh"))  # EVALSHA -> NOSCRIPT -> load -> retry

    async def deadlines_gone() -> bool:
        names = [store.keys.deadline(k) for k in KEYS[:30]]
        return sum([await rc.exists(n) for n in names]) == 0

    await wait_until(deadlines_gone)
    for i in range(3):
        with cluster.client(i) as c:
            c.script_flush()
    assert sorted(await store.expired_sweep()) == sorted(KEYS[:30])  # pipelined EVALSHA


async def test_expiry_notifications_from_every_primary(
    cluster: LocalCluster, rc: RedisCluster, prefix: str
) -> None:
    store = SessionStore(rc, prefix=prefix, session_timeout=0.3, message_timeout=60, grace=10)
    seen: asyncio.Queue[tuple[str, SessionRecord | None]] = asyncio.Queue()

    async def on_expired(key: str) -> None:
        seen.put_nowait((key, await store.get(key)))

    listener = ExpiryListener(rc, on_expired, prefix=prefix, refresh_interval=1.0)
    await listener.start()
    try:
        await listener.wait_ready(10)
        assert listener.nodes == sorted(cluster.addresses)
        for i in range(3):  # enabled by the listener on each primary
            with cluster.client(i) as c:
                flags = c.config_get("notify-keyspace-events")["notify-keyspace-events"]
            assert {"E", "x"} <= set(flags)
        keys = KEYS[:45]
        where = await spread(rc, [store.keys.deadline(k) for k in keys])
        assert len(where) == 3
        for key in keys:
            await store.create(SessionRecord(key=key, owner="gw1"))
        got: dict[str, SessionRecord | None] = {}
        while len(got) < len(keys):
            key, record = await asyncio.wait_for(seen.get(), 10)
            got[key] = record
        assert sorted(got) == sorted(keys)
        assert all(r is not None and r.owner == "gw1" for r in got.values())  # still readable
        assert listener.subscriptions == 3 and listener.topology_refreshes >= 1
    finally:
        await listener.stop()


async def test_sweep_across_primaries(rc: RedisCluster, prefix: str) -> None:
    store = SessionStore(rc, prefix=prefix, session_timeout=60, message_timeout=60, grace=30)
    due = KEYS[:30]
    for key in due:  # created 61 s ago: due at once
        await store.create(SessionRecord(key=key, created=time.time() - 61))
    alive = KEYS[30:40]
    for key in alive:
        await store.create(SessionRecord(key=key))
    lost = KEYS[40:55]  # deadline keys lost early, on every primary
    assert len(await spread(rc, [store.keys.deadline(k) for k in lost])) == 3
    for key in lost:
        await store.create(SessionRecord(key=key))
        await rc.delete(store.keys.deadline(key))

    async def deadlines_gone() -> bool:
        return sum([await rc.exists(store.keys.deadline(k)) for k in due]) == 0

    await wait_until(deadlines_gone)
    assert sorted(await store.expired_sweep(count=5)) == sorted(due)
    for key in lost:
        assert await rc.exists(store.keys.deadline(key)) == 1  # re-armed
    for key in due:
        await store.delete(key)
    assert await store.expired_sweep() == []


async def test_events_across_nodes(cluster: LocalCluster, prefix: str) -> None:
    publisher = connect(cluster.url_for(0))  # knows only node 1 at start
    subscriber = connect(cluster.url_for(2))  # knows only node 3 at start
    bus_a = EventBus(publisher, node="gwA", prefix=prefix)
    bus_c = EventBus(subscriber, node="gwC", prefix=prefix)
    home = await node_of(subscriber, bus_c.channel)  # type: ignore[arg-type]
    # an external consumer on a node that is not the channel's: PUBLISH reaches it too
    other = next(i for i, a in enumerate(cluster.addresses) if a != home)
    external = Redis(host="127.0.0.1", port=cluster.servers[other].port or 0)
    ext = external.pubsub(ignore_subscribe_messages=True)
    await ext.subscribe(bus_a.channel)
    try:
        async with bus_c.subscribe() as events:
            assert events.node == home
            # The receiver count is per node (cluster PUBLISH): 0 or 1 depending on which node
            # the client routed it to; delivery to every node's subscribers is what matters.
            await bus_a.publish("E_MSRP_GW_SETUP_FAILED", {"key": "a|b", "code": 408})
            event = await asyncio.wait_for(anext(events), 5)
            assert event["node"] == "gwA" and event["data"] == {"key": "a|b", "code": 408}
        msg = None
        for _ in range(50):
            msg = await ext.get_message(timeout=0.1)
            if msg is not None:
                break
        assert msg is not None and b"E_MSRP_GW_SETUP_FAILED" in msg["data"]
    finally:
        await ext.aclose()  # type: ignore[no-untyped-call]
        await external.aclose()
        await publisher.aclose()
        await subscriber.aclose()


async def test_update_session_and_publish_on_every_primary_reaches_the_bus(
    cluster: LocalCluster, rc: RedisCluster, prefix: str
) -> None:
    """A set-up's last write publishes from its session's primary (inside the script); the
    cluster carries the event to the bus subscriber on the channel's own primary."""
    store = SessionStore(rc, prefix=prefix)
    subscriber = connect(cluster.url_for(2))
    bus = EventBus(subscriber, node="gwC", prefix=prefix)
    where = await spread(rc, [store.keys.session(k) for k in KEYS])
    assert len(where) == 3
    try:
        async with bus.subscribe() as events:
            for key in KEYS:
                assert await store.create(SessionRecord(key=key, owner="gw1"))
                payload = bus.payload("E_MSRP_GW_SESSION_STARTED", {"key": key})
                assert await store.update_session(
                    key, "", {"state": "active"}, bus.channel, payload
                )
            seen = [(await asyncio.wait_for(anext(events), 5))["data"]["key"] for _ in KEYS]
        assert sorted(seen) == sorted(KEYS)  # order holds per primary, not across them
    finally:
        await subscriber.aclose()


async def test_rpc_across_nodes(cluster: LocalCluster, prefix: str) -> None:
    a = connect(cluster.url_for(0))
    c = connect(cluster.url_for(2))

    async def echo(msg: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": msg["body"][::-1]}

    async def never(msg: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not called")

    # several owners, so inboxes land on different primaries
    owners = [Rpc(c, f"owner{i}", echo, prefix=prefix) for i in range(6)]
    front = Rpc(a, "front", never, prefix=prefix)
    assert isinstance(a, RedisCluster)
    assert len(await spread(a, [o.inbox(o.node_id) for o in owners])) >= 2
    for rpc in (*owners, front):
        await rpc.start()
    try:
        replies = await asyncio.gather(
            *(front.call(f"owner{i % 6}", {"body": bytes([i, 0, 255])}, 3.0) for i in range(30))
        )
        assert [r["body"] for r in replies] == [bytes([255, 0, i]) for i in range(30)]
        assert sum(o.stats["served"] for o in owners) == 30
        with pytest.raises(NodeUnreachable):  # nobody subscribed: PUBLISH counts 0 at once
            await front.call("ghost", {"body": b""}, 3.0)
    finally:
        for rpc in (*owners, front):
            await rpc.stop()
        await a.aclose()
        await c.aclose()


async def test_registry_on_cluster(cluster: LocalCluster, prefix: str) -> None:
    clients = [connect(cluster.url_for(i % 3)) for i in range(6)]
    regs = [
        NodeRegistry(clients[i], f"gw{i}", prefix=prefix, ttl=0.6, cache_for=0, info={"i": i})
        for i in range(6)
    ]
    rc = clients[0]
    assert isinstance(rc, RedisCluster)
    assert len(await spread(rc, [r.key(r.node_id) for r in regs])) >= 2
    for reg in regs:
        await reg.start()
    try:
        assert sorted(n["node"] for n in await regs[0].nodes()) == [f"gw{i}" for i in range(6)]
        assert all([await regs[0].alive(f"gw{i}") for i in range(6)])
        await regs[5].stop(deregister=False)  # like SIGKILL
        await regs[4].stop()  # graceful
        assert not await regs[0].alive("gw4")
        await asyncio.sleep(0.8)
        assert not await regs[0].alive("gw5")
        assert await regs[0].alive("gw3")  # still beating
        assert sorted(n["node"] for n in await regs[1].nodes()) == [f"gw{i}" for i in range(4)]
    finally:
        for reg in regs:
            await reg.stop()
        for client in clients:
            await client.aclose()


async def test_primaries_and_node_clients(cluster: LocalCluster, rc: RedisCluster) -> None:
    from gw.store.client import node_client, scan_batches

    nodes = await primaries(rc, refresh=True)
    assert sorted(n.name for n in nodes) == sorted(cluster.addresses)
    for node in nodes:
        client = node_client(rc, node)
        try:
            assert await client.ping()
            assert int(client.connection_pool.connection_kwargs["port"]) == int(node.port)
        finally:
            await client.aclose()
    batches = [b async for b in scan_batches(rc, "nothing-matches-*", 10)]
    assert batches == []
