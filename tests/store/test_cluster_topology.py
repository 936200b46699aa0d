"""Following Redis Cluster topology changes: a 4th primary joins and takes slots; the whole
cluster goes down and comes back.

Its own cluster (the test changes the topology). The new primary starts with keyspace
notifications off: the listener must find it, enable them there and subscribe. An RPC inbox
whose slot moved follows it to the new primary; a caller with a stale slot map still gets
the reply. An event subscription opened before the change keeps receiving.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from gw.cluster.rpc import NodeUnreachable, Rpc
from gw.store import EventBus, ExpiryListener, SessionRecord, SessionStore, connect
from gw.store.client import ClusterUnavailable
from tests.support.redis_cluster import LocalCluster

MOVED = 300  # slots moved to the new primary; redis-cli takes them from the source's start


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(3) as c:
        yield c


def names_in_slots(make: Any, head: str, first: int, last: int, count: int = 1) -> list[str]:
    """`count` names make(i) such that the slot of head + name is in [first, last]."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        name = make(i)
        if first <= key_slot(f"{head}{name}".encode()) <= last:
            out.append(name)
        i += 1
    return out


async def test_listener_rpc_and_events_follow_a_new_primary(cluster: LocalCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    (first, _), *_ = cluster.slots_of(0)
    moved = (first, first + MOVED - 1)
    rc = connect(cluster.url)
    assert isinstance(rc, RedisCluster)
    store = SessionStore(rc, prefix=prefix, session_timeout=0.3, message_timeout=60, grace=10)
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def on_expired(key: str) -> None:
        seen.put_nowait(key)

    async def echo(msg: dict[str, Any]) -> dict[str, Any]:
        return {"ok": msg["n"]}

    listener = ExpiryListener(rc, on_expired, prefix=prefix, refresh_interval=0.3)
    # an inbox whose slot is about to move
    owner_id = names_in_slots(lambda i: f"owner{i}", f"{prefix}:inbox:", *moved)[0]
    owner = Rpc(rc, owner_id, echo, prefix=prefix, refresh_interval=0.3)
    front = Rpc(connect(cluster.url_for(1)), "front", echo, prefix=prefix, refresh_interval=60)
    bus = EventBus(rc, node="gw1", prefix=prefix)
    events = bus.subscribe()
    await events.open()
    await listener.start()
    await owner.start()
    await front.start()
    try:
        await listener.wait_ready(10)
        assert len(listener.nodes) == 3
        assert (await front.call(owner_id, {"n": 1}, 3.0))["ok"] == 1

        new = await asyncio.to_thread(
            cluster.add_primary, slots=MOVED, source=0, options={"notify-keyspace-events": ""}
        )
        new_addr = f"127.0.0.1:{new.port}"
        assert cluster.slots_of(3) == [moved]

        deadline = time.monotonic() + 10
        while new_addr not in listener.nodes or not listener.ready:
            assert time.monotonic() < deadline, listener.nodes
            await asyncio.sleep(0.05)
        with new.client() as c:  # the listener enabled notifications on the new primary
            assert {"E", "x"} <= set(
                c.config_get("notify-keyspace-events")["notify-keyspace-events"]
            )

        # sessions in the moved slots live on the new primary; their expiry is heard there
        keys = names_in_slots(lambda i: f"moved{i}", "", *moved, count=5)
        others = ["a", "b", "c"]
        for key in keys + others:
            await store.create(SessionRecord(key=key))
        homes = {rc.get_node_from_key(store.keys.session(k)) for k in keys}
        assert {str(n.name) for n in homes if n is not None} == {new_addr}
        got: set[str] = set()
        while len(got) < len(keys) + len(others):
            got.add(await asyncio.wait_for(seen.get(), 10))
        assert got == set(keys + others)

        # the owner's inbox moved: it re-subscribes on the new primary
        inbox = owner.inbox(owner_id).encode()
        deadline = time.monotonic() + 10
        while True:
            with new.client() as c:
                if inbox in c.pubsub_channels():
                    break
            assert time.monotonic() < deadline, "the inbox never followed its slot"
            await asyncio.sleep(0.05)
        # front's slot map is stale (it would PUBLISH to the old primary, counting nobody):
        # it notices the move and waits for the reply instead of reporting NodeUnreachable
        assert (await front.call(owner_id, {"n": 2}, 3.0))["ok"] == 2
        assert front.stats["unreachable"] == 0
        assert (await front.call(owner_id, {"n": 3}, 3.0))["ok"] == 3  # now PUBLISH counts 1
        with pytest.raises(NodeUnreachable):
            await front.call("ghost", {"n": 0}, 3.0)

        await bus.publish("E_AFTER_MOVE", {})
        event = await asyncio.wait_for(anext(events), 5)
        assert event["event"] == "E_AFTER_MOVE"
    finally:
        await events.aclose()
        await listener.stop()
        await owner.stop()
        await front.stop()
        await front.redis.aclose()
        await rc.aclose()


async def test_cluster_outage_is_a_connection_error_and_recovers() -> None:
    with LocalCluster(3) as cluster:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        rc = connect(cluster.url)
        assert isinstance(rc, RedisCluster)
        store = SessionStore(rc, prefix=prefix, session_timeout=0.3, message_timeout=60)
        seen: asyncio.Queue[str] = asyncio.Queue()

        async def on_expired(key: str) -> None:
            seen.put_nowait(key)

        async def echo(msg: dict[str, Any]) -> dict[str, Any]:
            return {"ok": msg["n"]}

        listener = ExpiryListener(
            rc, on_expired, prefix=prefix, refresh_interval=0.5, max_backoff=0.5, ping_interval=1
        )
        rpc = Rpc(rc, "n1", echo, prefix=prefix, refresh_interval=0.5)
        await listener.start()
        await rpc.start()
        try:
            await listener.wait_ready(10)
            for server in cluster.servers:
                server.kill()
            # what callers see is a RedisError (the node answers 503), not redis-py's
            # RedisClusterException
            with pytest.raises(ClusterUnavailable):
                await store.get("a")
            with pytest.raises(RedisError):
                await store.create(SessionRecord(key="a"))
            with pytest.raises(RedisError):
                await store.expired_sweep()
            # RedisError from the PUBLISH, or TimeoutError when the inbox noticed the outage
            # first and the call waited for it to resubscribe: which one is a race
            with pytest.raises((RedisError, TimeoutError)):
                await rpc.call("n1", {"n": 0}, 1.0)
            await asyncio.sleep(1.0)
            assert not listener.ready

            for server in cluster.servers:  # same ports and node ids: the cluster re-forms
                server.start()
            await asyncio.to_thread(cluster.wait_stable)
            deadline = time.monotonic() + 20
            while True:
                try:
                    await store.create(SessionRecord(key="after"))
                    break
                except RedisError:
                    assert time.monotonic() < deadline, "the client never recovered"
                    await asyncio.sleep(0.1)
            assert await asyncio.wait_for(seen.get(), 10) == "after"  # listener is back
            assert listener.ready and listener.subscriptions >= 6
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert (await rpc.call("n1", {"n": 1}, 2.0))["ok"] == 1
                    break
                except NodeUnreachable:
                    assert time.monotonic() < deadline, "rpc inbox never came back"
                    await asyncio.sleep(0.1)
        finally:
            await listener.stop()
            await rpc.stop()
            await rc.aclose()


async def test_outage_right_after_a_refresh_is_cluster_unavailable_everywhere() -> None:
    """The whole cluster goes down less than a second after the clients read the slot map.
    redis-py 8.2 runs an error-triggered refresh at most once a second by default: a command
    then ran out of retries before any refresh and raised a plain ConnectionError, and once a
    refresh had failed it raised RedisClusterUnreachableError (not a RedisError). Every entry
    point of the store must raise ClusterUnavailable, the first call after the outage too."""
    with LocalCluster(3) as cluster:
        prefix = f"t{uuid.uuid4().hex[:10]}"
        clients = [connect(cluster.url) for _ in range(3)]
        try:
            stores = []
            for rc in clients:
                assert isinstance(rc, RedisCluster)
                store = SessionStore(rc, prefix=prefix, session_timeout=60, message_timeout=60)
                await store.create(SessionRecord(key="a"))  # slot map read, scripts loaded
                stores.append(store)
            for server in cluster.servers:
                server.kill()
            by_command, by_script, by_pipeline = stores
            errors: list[ClusterUnavailable] = []
            with pytest.raises(ClusterUnavailable) as command:
                await by_command.get("a")  # HGETALL
            errors.append(command.value)
            with pytest.raises(ClusterUnavailable) as script:
                await by_script.create(SessionRecord(key="b"))  # EVALSHA
            errors.append(script.value)
            with pytest.raises(ClusterUnavailable) as pipeline:
                await by_pipeline.sids(["a", "b"])  # a pipeline
            errors.append(pipeline.value)
            for store in stores:  # and once the clients know
                with pytest.raises(ClusterUnavailable):
                    await store.get("a")
                with pytest.raises(ClusterUnavailable):
                    await store.touch("a", page_message=True, now=time.time())
                with pytest.raises(ClusterUnavailable):
                    await store.sids(["a"])
                with pytest.raises(RedisError):  # SCAN per primary, then pipelines
                    await store.expired_sweep()
            for error in errors:
                assert isinstance(error, RedisError) and isinstance(error, RedisClusterException)
                assert isinstance(error.__cause__, RedisClusterException | RedisError)
                unreachable = getattr(redis.exceptions, "RedisClusterUnreachableError", None)
                if unreachable is not None:  # redis-py >= 8.2: its own type still matches
                    assert isinstance(error, unreachable)
        finally:
            for rc in clients:
                await rc.aclose()
