"""The single-server client's connection pool: a burst waits for a connection, it does not fail.

redis-py's default pool raises "Too many connections" as soon as all are busy; the benchmark
saw set-ups fail with 503 that way after a pause of the node, while Redis was fine.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gw.store.client import MAX_CONNECTIONS, POOL_TIMEOUT, connect


async def test_defaults_are_a_bounded_blocking_pool(redis_url: str) -> None:
    client = connect(redis_url)
    try:
        pool = client.connection_pool
        assert (pool.max_connections, pool.timeout) == (MAX_CONNECTIONS, POOL_TIMEOUT)  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_url_options_set_the_pool(redis_url: str) -> None:
    client = connect(f"{redis_url}?max_connections=3&pool_timeout=0.5")
    try:
        pool = client.connection_pool
        assert (pool.max_connections, pool.timeout) == (3, 0.5)  # type: ignore[attr-defined]
        assert "pool_timeout" not in pool.connection_kwargs  # not passed on to connections
        assert await client.ping()
    finally:
        await client.aclose()


async def test_burst_beyond_the_pool_waits_for_a_connection(
    redis_url: str, key_prefix: str
) -> None:
    client = connect(f"{redis_url}?max_connections=2")
    key = f"{key_prefix}:burst"
    try:
        # 20 commands each holding a connection for 50 ms: 2 at a time, about 0.5 s in all.
        results = await asyncio.gather(
            *(client.blpop([f"{key}:{i}"], timeout=0.05) for i in range(20))
        )
        assert results == [None] * 20
        assert len(client.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]
    finally:
        await client.aclose()


async def test_no_connection_within_pool_timeout_is_a_connection_error(
    redis_url: str, key_prefix: str
) -> None:
    client = connect(f"{redis_url}?max_connections=1&pool_timeout=0.1")
    try:
        hold = asyncio.ensure_future(client.blpop([f"{key_prefix}:hold"], timeout=1))
        await asyncio.sleep(0.05)
        with pytest.raises(RedisConnectionError):
            await client.ping()
        assert await hold is None
        assert await client.ping()  # served again once the connection is back
    finally:
        await client.aclose()
