"""The single-server client's connection pool: a burst waits for a connection, it does not fail.

redis-py's default pool raises "Too many connections" as soon as all are busy; the benchmark
saw set-ups fail with 503 that way after a pause of the node, while Redis was fine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError

from gw.store.client import (
    MAX_CONNECTIONS,
    POOL_TIMEOUT,
    WaitingConnectionPool,
    connect,
    lean_connection,
)

Client = Callable[..., Awaitable[tuple[Redis, WaitingConnectionPool]]]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Client]:
    """`await client(query)`: a store client on the suite's server (closed at the end)."""
    made: list[Redis] = []

    async def make(query: str = "", **kwargs: Any) -> tuple[Redis, WaitingConnectionPool]:
        c = connect(f"{redis_url}{query}", **kwargs)
        assert isinstance(c, Redis) and isinstance(c.connection_pool, WaitingConnectionPool)
        made.append(c)
        return c, c.connection_pool

    yield make
    for c in made:
        await c.aclose()


async def test_defaults_are_a_bounded_waiting_pool(client: Client) -> None:
    _, pool = await client()
    assert (pool.max_connections, pool.timeout) == (MAX_CONNECTIONS, POOL_TIMEOUT)


async def test_url_options_and_arguments_set_the_pool(client: Client) -> None:
    c, pool = await client("?max_connections=3&pool_timeout=0.5")
    assert (pool.max_connections, pool.timeout) == (3, 0.5)
    assert "pool_timeout" not in pool.connection_kwargs  # not passed on to connections
    assert await c.ping()
    _, pool = await client(pool_timeout=0.25)
    assert pool.timeout == 0.25


async def test_burst_beyond_the_pool_waits_for_a_connection(
    client: Client, key_prefix: str
) -> None:
    c, pool = await client("?max_connections=2")
    key = f"{key_prefix}:burst"
    # 20 commands each holding a connection for 50 ms: 2 at a time, about 0.5 s in all.
    results = await asyncio.gather(*(c.blpop([f"{key}:{i}"], timeout=0.05) for i in range(20)))
    assert results == [None] * 20
    assert len(pool._in_use_connections) == 0


async def test_no_connection_within_pool_timeout_is_a_connection_error(
    client: Client, key_prefix: str
) -> None:
    c, _ = await client("?max_connections=1&pool_timeout=0.1")
    hold = asyncio.ensure_future(c.blpop([f"{key_prefix}:hold"], timeout=1))
    await asyncio.sleep(0.05)
    with pytest.raises(RedisConnectionError):
        await c.ping()
    assert await hold is None
    assert await c.ping()  # served again once the connection is back


@given(
    st.lists(
        st.one_of(
            st.text(),
            st.binary(),
            st.integers(min_value=-(2**63), max_value=2**63 - 1),
            st.floats(allow_nan=False),
        ),
        max_size=40,
    ),
    st.sampled_from(["EVALSHA", "HSET", "CONFIG GET", b"GET"]),
)
def test_lean_packing_writes_exactly_what_redis_py_writes(args: list[Any], name: Any) -> None:
    """The single-server pool's connections pack plain commands with one hiredis call; the
    bytes on the wire are redis-py's own, whatever the arguments (floats and two-word
    names take redis-py's path)."""
    plain, lean = Connection(), lean_connection(Connection)()
    assert WaitingConnectionPool().connection_class is type(lean)
    ours = b"".join(bytes(part) for part in lean.pack_command(name, *args))
    theirs = b"".join(bytes(part) for part in plain.pack_command(name, *args))
    assert ours == theirs
