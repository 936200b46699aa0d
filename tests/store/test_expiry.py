"""Expiry notifications and the sweep, on a private server per test (they reconfigure it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gw.store import ExpiryListener, SessionRecord, SessionStore, ensure_expired_events
from tests.support.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


async def flags(client: Redis) -> str:
    reply = await client.config_get("notify-keyspace-events")
    return str(reply["notify-keyspace-events"])


class Recorder:
    """Expiry callback: records the key and the session as read at notification time."""

    def __init__(self, store: SessionStore, fail_on: str = "") -> None:
        self.store = store
        self.fail_on = fail_on
        self.queue: asyncio.Queue[tuple[str, SessionRecord | None]] = asyncio.Queue()

    async def __call__(self, key: str) -> None:
        record = await self.store.get(key)
        self.queue.put_nowait((key, record))
        if key == self.fail_on:
            raise RuntimeError("handler bug")

    async def next(self, timeout: float = 5.0) -> tuple[str, SessionRecord | None]:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_notification_arrives_and_hash_is_readable(client: Redis) -> None:
    store = SessionStore(client, prefix="p", session_timeout=0.3, message_timeout=60, grace=5)
    other = SessionStore(client, prefix="q", session_timeout=0.2, message_timeout=60)
    recorder = Recorder(store, fail_on="first")
    listener = ExpiryListener(client, recorder, prefix="p")
    await listener.start()
    await listener.wait_ready(5)
    await other.create(SessionRecord(key="foreign"))
    await client.set("p:unrelated", "1", px=100)
    await store.create(SessionRecord(key="first", owner="gw1", msg_from="sip:a@x"))
    key, record = await recorder.next()
    assert key == "first"
    assert record is not None and record.owner == "gw1" and record.msg_from == "sip:a@x"
    # a failing handler is logged; the listener goes on
    await store.create(SessionRecord(key="second", owner="gw1"))
    key, record = await recorder.next()
    assert key == "second" and record is not None
    await asyncio.sleep(0.3)
    assert recorder.queue.empty()  # other prefixes and non-deadline keys are ignored
    await listener.stop()


async def test_touch_postpones_the_notification(client: Redis) -> None:
    store = SessionStore(client, prefix="p", session_timeout=1.0, message_timeout=60)
    recorder = Recorder(store)
    listener = ExpiryListener(client, recorder, prefix="p")
    await listener.start()
    await listener.wait_ready(5)
    start = time.time()
    await store.create(SessionRecord(key="k"))
    for _ in range(4):
        await asyncio.sleep(0.3)
        await store.touch("k", page_message=False, now=time.time())
    assert recorder.queue.empty()
    key, _ = await recorder.next()
    assert key == "k" and time.time() - start >= 2.2
    await listener.stop()


@pytest.mark.parametrize(
    ("initial", "expected"),
    [("", {"E", "x"}), ("Kg", {"K", "g", "E", "x"}), ("KEA", {"K", "E", "A"})],
)
async def test_listener_enables_notifications_keeping_flags(
    redis_server: RedisServer, client: Redis, initial: str, expected: set[str]
) -> None:
    await client.config_set("notify-keyspace-events", initial)
    listener = ExpiryListener(client, Recorder(SessionStore(client, prefix="p")), prefix="p")
    await listener.start()
    await listener.wait_ready(5)
    assert set(await flags(client)) == expected
    await listener.stop()


async def test_config_not_allowed_warns(
    redis_server: RedisServer, client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await client.config_set("notify-keyspace-events", "")
    await client.acl_setuser(
        "gw",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-config"],
    )
    limited = Redis(host="127.0.0.1", port=redis_server.port or 0, username="gw", password="pw")
    with caplog.at_level(logging.WARNING, logger="gw.store.expiry"):
        assert not await ensure_expired_events(limited)
        listener = ExpiryListener(limited, Recorder(SessionStore(limited)), prefix="p")
        await listener.start()
        await listener.wait_ready(5)  # still listening: notifications may be enabled elsewhere
        await listener.stop()
    assert "notify-keyspace-events" in caplog.text and "'Ex'" in caplog.text
    assert await flags(client) == ""
    await limited.aclose()


async def test_sweep_finds_what_notifications_missed(client: Redis) -> None:
    await client.config_set("notify-keyspace-events", "")
    store = SessionStore(client, prefix="p", session_timeout=60, message_timeout=60, grace=30)
    for key in ("a", "b", "c"):  # created 61 s ago: due at once
        await store.create(SessionRecord(key=key, created=time.time() - 61))
    await store.create(SessionRecord(key="alive"))
    await store.create(SessionRecord(key="evicted"))
    await client.delete(store.keys.deadline("evicted"))  # lost early: no event either

    async def short_deadlines_gone() -> bool:
        names = [store.keys.deadline(k) for k in "abc"]
        return int(await client.exists(*names)) == 0

    await wait_for(short_deadlines_gone)
    assert sorted(await store.expired_sweep(time.time())) == ["a", "b", "c"]
    assert await store.get("a") is not None  # still readable for the cleanup
    assert await client.exists(store.keys.deadline("evicted")) == 1  # re-armed
    assert 55_000 < int(await client.pttl(store.keys.deadline("evicted"))) <= 60_000
    for key in "abc":
        await store.delete(key)
    assert await store.expired_sweep(time.time()) == []


async def test_listener_resubscribes_after_server_restart(
    redis_server: RedisServer, client: Redis
) -> None:
    await client.config_set("notify-keyspace-events", "")  # the listener must set it, twice
    store = SessionStore(client, prefix="p", session_timeout=0.2, message_timeout=60)
    recorder = Recorder(store)
    listener = ExpiryListener(client, recorder, prefix="p", max_backoff=0.2, ping_interval=1.0)
    await listener.start()
    await listener.wait_ready(5)
    await store.create(SessionRecord(key="before"))
    assert (await recorder.next())[0] == "before"

    redis_server.kill()
    await asyncio.sleep(0.5)  # the listener notices and retries while the server is down
    redis_server.start()  # same port, fresh config: notifications off again

    async def resubscribed() -> bool:
        return listener.subscriptions >= 2 and listener.ready

    await wait_for(resubscribed)
    assert set(await flags(client)) >= {"E", "x"}
    await store.create(SessionRecord(key="after"))  # the script cache is gone too
    assert (await recorder.next())[0] == "after"
    await listener.stop()


async def test_listener_detects_a_silent_connection(client: Redis) -> None:
    listener = ExpiryListener(
        client, Recorder(SessionStore(client)), prefix="p", ping_interval=0.2, max_backoff=0.2
    )
    await listener.start()
    await listener.wait_ready(5)
    await client.client_pause(1500, all=True)  # PINGs go unanswered

    async def resubscribed() -> bool:
        return listener.subscriptions >= 2 and listener.ready

    await wait_for(resubscribed)
    await listener.stop()


async def test_stop_is_prompt_even_if_a_cancel_is_swallowed(redis_server: RedisServer) -> None:
    # socket_timeout makes redis-py write through asyncio.wait_for, which on Python 3.11 can
    # swallow a cancellation; stop() must still end the listener.
    client = Redis(host="127.0.0.1", port=redis_server.port or 0, socket_timeout=5)
    for delay in (0.0, 0.001, 0.01, 0.05):
        listener = ExpiryListener(client, Recorder(SessionStore(client)), ping_interval=0.001)
        await listener.start()
        await listener.wait_ready(5)
        await asyncio.sleep(delay)
        await asyncio.wait_for(listener.stop(), 3)
    await client.aclose()
