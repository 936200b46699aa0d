"""The session table on a real server: encoding, atomicity, TTL formula, scan, round trips."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Connection, Redis

from gw.store import SessionNotFound, SessionRecord, SessionStore, scan_batch
from gw.store.records import RECORD_VERSION

T0 = 1_000_000.0  # a fixed wall clock: TTLs depend only on the formula, not on real time


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(redis: Redis, prefix: str, **kwargs: Any) -> SessionStore:
    kwargs.setdefault("clock", Clock())
    return SessionStore(redis, prefix=prefix, **kwargs)


def full_record(key: str) -> SessionRecord:
    return SessionRecord(
        key=key,
        state="active",
        origin="answer",
        owner="gw1",
        msg_from="sip:alice@example.com",
        msg_to="sip:bob@example.com",
        msg_ruri="sip:bob@10.0.0.1:5060;transport=tcp",
        call_id="c1@gw1",
        local_tag="lt",
        remote_tag="rt",
        local_path=["msrp://127.0.0.1:2855/s1;tcp"],
        peer_path=["msrp://relay:2855/r;tcp", "msrp://10.0.0.2:7777/p;tcp"],
        content_types=["text/plain", "message/cpim"],
        created=T0 - 10.5,
        last_message=T0 - 5.25,
        last_send=T0 - 1.125,
        epoch=3,
        extra={"queued": 2, "nested": {"a": [1, 2.5, None, "x"]}, "blob": b"\x00\xff", "ü": "é"},
    )


async def pttl(redis: Redis, name: str) -> int:
    return int(await redis.pttl(name))


async def test_create_get_round_trip_all_field_types(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    record = full_record("alice|bob")
    assert await store.create(record)
    assert await store.get("alice|bob") == record
    assert await store.get("nobody") is None
    raw = await redis.hgetall(store.keys.session("alice|bob"))
    assert raw[b"msg_from"] == b"sip:alice@example.com"  # strings stay readable
    assert raw[b"epoch"] == b"3"


async def test_records_carry_their_layout_version(redis: Redis, key_prefix: str) -> None:
    """Written with the current version; a hash from before versioning reads as version 0
    and a newer release's extra field is ignored (rolling upgrades)."""
    store = make_store(redis, key_prefix)
    assert await store.create(SessionRecord(key="new"))
    name = store.keys.session("new")
    assert await redis.hget(name, "version") == str(RECORD_VERSION).encode()
    await redis.hdel(name, "version")
    await redis.hset(name, "added_later", "x")
    old = await store.get("new")
    assert old is not None and old.version == 0 and old.state == "setup"


async def test_sids_answer_per_key_in_order(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    assert await store.sids([]) == []
    assert await store.create(SessionRecord(key="a", sid="s1"))
    assert await store.create(SessionRecord(key="c"))  # written without a sid
    assert await store.sids(["a", "b", "c", "a"]) == ["s1", None, "", "s1"]
    await store.delete("a")
    assert await store.sids(["a", "c"]) == [None, ""]


async def test_create_fills_timestamps_and_defaults(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    record = SessionRecord(key="k")
    assert await store.create(record)
    assert (record.created, record.last_message, record.last_send) == (T0, T0, T0)
    assert await store.get("k") == record


async def test_create_or_get_creates_a_new_key_and_returns_a_taken_one(
    redis: Redis, key_prefix: str
) -> None:
    store = make_store(redis, key_prefix)
    record = full_record("alice|bob")
    assert await store.create_or_get(record) is None, "created"
    assert await store.get("alice|bob") == record
    assert await redis.pttl(store.keys.deadline("alice|bob")) > 0, "deadline armed"
    other = SessionRecord(key="alice|bob", owner="gw2")
    found = await store.create_or_get(other)
    assert found == record, "the holder is returned, unchanged"
    assert await store.get("alice|bob") == record


async def test_create_is_exclusive(redis_url: str, redis: Redis, key_prefix: str) -> None:
    a = make_store(redis, key_prefix)
    b = make_store(Redis.from_url(redis_url), key_prefix)
    results = await asyncio.gather(
        a.create(SessionRecord(key="k", owner="gw1")),
        b.create(SessionRecord(key="k", owner="gw2")),
    )
    await b.redis.aclose()
    assert sorted(results) == [False, True]
    winner = "gw1" if results[0] else "gw2"
    record = await a.get("k")
    assert record is not None and record.owner == winner


def test_record_validates_state_and_origin() -> None:
    with pytest.raises(ValueError):
        SessionRecord(key="k", state="gone")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SessionRecord(key="k", origin="elsewhere")  # type: ignore[arg-type]


async def test_store_refuses_decoding_client(redis_url: str) -> None:
    client = Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        SessionStore(client)
    await client.aclose()


async def test_initial_ttls(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix, session_timeout=43200, message_timeout=7200, grace=30)
    await store.create(SessionRecord(key="k"))
    dl = await pttl(redis, store.keys.deadline("k"))
    sess = await pttl(redis, store.keys.session("k"))
    assert 7_198_000 < dl <= 7_200_000  # message_timeout ends first
    assert abs((sess - dl) - 30_000) < 1000  # the hash outlives the deadline by grace


async def test_touch_ttl_formula(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix, session_timeout=43200, message_timeout=7200, grace=30)
    await store.create(SessionRecord(key="k"))
    dl, sess = store.keys.deadline("k"), store.keys.session("k")

    # page-mode MESSAGE at +100: min(+100+43200, +100+7200) -> 7200 s from now
    await store.touch("k", page_message=True, now=T0 + 100)
    assert 7_198_000 < await pttl(redis, dl) <= 7_200_000
    # MSRP SEND at +5000: session_timeout is far, message_timeout (+7300) ends first -> 2300 s
    await store.touch("k", page_message=False, now=T0 + 5000)
    assert 2_298_000 < await pttl(redis, dl) <= 2_300_000
    assert abs(await pttl(redis, sess) - await pttl(redis, dl) - 30_000) < 1000
    record = await store.get("k")
    assert record is not None
    assert (record.last_message, record.last_send) == (T0 + 100, T0 + 5000)
    assert store.deadline(record) == T0 + 7300


async def test_touch_session_timeout_from_either_side(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix, session_timeout=600, message_timeout=7200)
    await store.create(SessionRecord(key="k"))
    dl = store.keys.deadline("k")
    assert 598_000 < await pttl(redis, dl) <= 600_000
    await store.touch("k", page_message=True, now=T0 + 10)  # min(+610, +7210)
    assert 598_000 < await pttl(redis, dl) <= 600_000
    await store.touch("k", page_message=False, now=T0 + 300)  # min(+900, +7210)
    assert 598_000 < await pttl(redis, dl) <= 600_000
    # a late, out-of-order touch never moves a timestamp back
    await store.touch("k", page_message=False, now=T0 + 200)
    record = await store.get("k")
    assert record is not None and record.last_send == T0 + 300
    assert 698_000 < await pttl(redis, dl) <= 700_000  # deadline +900 seen from +200


async def test_touch_missing_session(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    with pytest.raises(SessionNotFound):
        await store.touch("nope", page_message=True, now=T0)
    assert await redis.exists(store.keys.session("nope"), store.keys.deadline("nope")) == 0


class CountingConnection(Connection):
    """Counts requests written to the socket (a pipeline or MULTI/EXEC block is one write).
    Server-side per-client counters (Valkey's tot-cmds) also count commands run by scripts."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


async def _last_command(redis: Redis, client_id: int) -> str:
    (entry,) = await redis.client_list(client_id=[client_id])
    return str(entry["cmd"])


async def test_touch_is_one_round_trip(redis_url: str, redis: Redis, key_prefix: str) -> None:
    client = Redis.from_url(redis_url, connection_class=CountingConnection, max_connections=1)
    store = make_store(client, key_prefix)
    await store.create(SessionRecord(key="k"))
    await store.touch("k", page_message=True, now=T0 + 1)  # warm: connection, script cache
    client_id = int(await client.client_id())
    before_writes = CountingConnection.writes
    stats = await redis.info("commandstats")

    await store.touch("k", page_message=False, now=T0 + 2)

    assert CountingConnection.writes - before_writes == 1
    after = await redis.info("commandstats")
    assert after["cmdstat_evalsha"]["calls"] - stats["cmdstat_evalsha"]["calls"] == 1
    assert await _last_command(redis, client_id) == "evalsha"
    await client.aclose()


async def test_update(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix, session_timeout=600, message_timeout=7200)
    await store.create(SessionRecord(key="k"))
    assert await store.update("k", state="active", peer_path=["msrp://a:1/x;tcp"], extra={"n": 1})
    record = await store.get("k")
    assert record is not None
    assert (record.state, record.peer_path, record.extra) == (
        "active",
        ["msrp://a:1/x;tcp"],
        {"n": 1},
    )
    # a timestamp change moves the deadline
    await store.update("k", last_send=T0 + 100)
    assert 698_000 < await pttl(redis, store.keys.deadline("k")) <= 700_000
    # never resurrects a session
    assert not await store.update("gone", state="active")
    assert await redis.exists(store.keys.session("gone")) == 0
    with pytest.raises(TypeError):
        await store.update("k", colour="red")
    with pytest.raises(ValueError):
        await store.update("k", state="weird")


async def test_update_session_and_publish_is_one_round_trip_and_only_for_a_live_session(
    redis: Redis, key_prefix: str
) -> None:
    store = make_store(redis, key_prefix)
    await store.create(SessionRecord(key="k", state="setup"))
    channel = f"{key_prefix}:events"
    sub = redis.pubsub(ignore_subscribe_messages=True)
    await sub.subscribe(channel)
    try:
        assert await store.update_session("k", "", {"state": "setup"}, channel, "first")
        before = await evalsha_calls(redis)
        assert await store.update_session("k", "", {"state": "active"}, channel, "started k")
        assert await evalsha_calls(redis) - before == 1  # one script call does both
        record = await store.get("k")
        assert record is not None and record.state == "active"
        # a session that is gone is neither recreated nor announced
        assert not await store.update_session("gone", "", {"state": "active"}, channel, "x")
        assert await redis.exists(store.keys.session("gone")) == 0
        got = []
        for _ in range(20):
            msg = await sub.get_message(timeout=0.1)
            if msg is not None:
                got.append(msg["data"])
        assert got == [b"first", b"started k"]
        with pytest.raises(TypeError):
            await store.update_session("k", "", {"colour": "red"}, channel, "x")
    finally:
        await sub.aclose()  # type: ignore[no-untyped-call]


async def evalsha_calls(redis: Redis) -> int:
    info = await redis.info("commandstats")
    return int(info["cmdstat_evalsha"]["calls"])


async def test_delete_with_owner_check(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    await store.create(SessionRecord(key="k", owner="gw1"))
    assert not await store.delete("k", owner="gw2")
    assert await store.get("k") is not None
    assert await store.delete("k", owner="gw1")
    assert await redis.exists(store.keys.session("k"), store.keys.deadline("k")) == 0
    assert not await store.delete("k")
    await store.create(SessionRecord(key="k2", owner="gw1"))
    assert await store.delete("k2")  # no owner given: unconditional
    assert not await store.delete("k2", owner="gw1")


async def test_a_replaced_instance_cannot_touch_update_or_delete_its_successor(
    redis: Redis, key_prefix: str
) -> None:
    """Same key, same owner node, two session instances: the old one's operations, named
    by its sid, miss the new record (issue 16: a replaced session deleted its successor's
    record and left it a ghost)."""
    store = make_store(redis, key_prefix)
    await store.create(SessionRecord(key="k", owner="gw1", sid="old"))
    assert await store.delete("k", owner="gw1", sid="old")
    await store.create(SessionRecord(key="k", owner="gw1", sid="new"))
    now = time.time()
    with pytest.raises(SessionNotFound):
        await store.touch("k", page_message=True, now=now, sid="old")
    assert not await store.update_session("k", "old", {"state": "active"})
    assert not await store.delete("k", owner="gw1", sid="old")
    record = await store.get("k")
    assert record is not None and (record.sid, record.state) == ("new", "setup")
    # the instance that holds the key, and an operator's command (no sid), still can
    await store.touch("k", page_message=True, now=now, sid="new")
    assert await store.update_session("k", "new", {"state": "active"})
    assert await store.delete("k", owner="gw1", sid="new")
    await store.create(SessionRecord(key="k", owner="gw1", sid="third"))
    assert await store.delete("k")


async def test_claim_race_has_exactly_one_winner(redis_url: str, key_prefix: str) -> None:
    clients = [Redis.from_url(redis_url) for _ in range(2)]
    stores = [make_store(c, key_prefix) for c in clients]
    keys = [f"k{i}" for i in range(50)]
    for key in keys:
        await stores[0].create(SessionRecord(key=key, owner="dead", epoch=4))
    for key in keys:
        won = await asyncio.gather(
            stores[0].claim(key, expected_owner="dead", new_owner="gw1"),
            stores[1].claim(key, expected_owner="dead", new_owner="gw2"),
        )
        winners = [r for r in won if r is not None]
        assert len(winners) == 1
        assert winners[0].epoch == 5
        final = await stores[0].get(key)
        assert final is not None and final.owner == winners[0].owner and final.epoch == 5
    assert await stores[0].claim("missing", expected_owner="dead", new_owner="gw1") is None
    for key in keys:
        await stores[0].delete(key)
    for c in clients:
        await c.aclose()


async def test_claim_returns_full_record(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    record = full_record("k")
    await store.create(record)
    claimed = await store.claim("k", expected_owner="gw1", new_owner="gw9")
    assert claimed is not None
    assert claimed.owner == "gw9" and claimed.epoch == record.epoch + 1
    assert claimed.peer_path == record.peer_path and claimed.extra == record.extra


async def test_iter_sessions_2000(redis: Redis, key_prefix: str) -> None:
    store = make_store(redis, key_prefix)
    other = make_store(redis, key_prefix + "x")
    keys = {f"user{i}@a|peer{i}@b" for i in range(2000)} | {"odd}key*?[x]"}
    sem = asyncio.Semaphore(100)

    async def create(key: str) -> None:
        async with sem:
            assert await store.create(SessionRecord(key=key, owner="gw1"))

    await asyncio.gather(*(create(key) for key in keys))
    await other.create(SessionRecord(key="not-mine"))
    for count in (scan_batch(10), 97):
        seen = [record.key async for record in store.iter_sessions(count)]
        assert len(seen) == len(set(seen)) == len(keys)
        assert set(seen) == keys
    await other.delete("not-mine")


def test_scan_batch_bounds() -> None:
    assert scan_batch(10) == 1024
    assert scan_batch(2) == 100
    assert scan_batch(20) == 5000


async def test_prefix_must_be_brace_free(redis: Redis) -> None:
    with pytest.raises(ValueError):
        SessionStore(redis, prefix="a{b}")
    store = SessionStore(redis, prefix="p")
    with pytest.raises(ValueError):
        await store.create(SessionRecord(key=""))
