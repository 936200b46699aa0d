"""CPU per Redis command in the node's client, by connection pool: why gw.store.client has
its own `WaitingConnectionPool` rather than redis-py's `BlockingConnectionPool`, and what its
lean packing (`lean_connection`) saves on a set-up's long script call (37 arguments) against
redis-py's own `ConnectionPool` and packer.

Usage: python -m bench.micro_redis   (starts its own Redis on a free port)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis

from bench.procs import RedisProc
from gw.store.client import WaitingConnectionPool

COMMANDS = 20_000
IN_FLIGHT = 8


# A set-up's EVALSHA: two keys and 16 field/value pairs (the record's fields).
SETUP_ARGS: tuple[Any, ...] = tuple(x for i in range(16) for x in (f"field{i}", b"v" * 20))


async def measure(url: str, pool_class: Any, args: tuple[Any, ...] = ()) -> float:
    """µs of this process's CPU per EVALSHA, IN_FLIGHT at a time."""
    extra = {
        ConnectionPool: {},
        BlockingConnectionPool: {"timeout": 2.0},
        WaitingConnectionPool: {"pool_timeout": 2.0},
    }[pool_class]
    client = Redis.from_pool(pool_class.from_url(url, max_connections=100, **extra))
    sha = await client.script_load("return 1")

    async def worker(n: int) -> None:
        for _ in range(n):
            if args:
                await client.evalsha(sha, 2, "msrpgw:sess:{k}", "msrpgw:dl:{k}", *args)
            else:
                await client.evalsha(sha, 0)

    started = time.process_time()
    await asyncio.gather(*(worker(COMMANDS // IN_FLIGHT) for _ in range(IN_FLIGHT)))
    cpu = time.process_time() - started
    await client.aclose()
    return cpu / COMMANDS * 1e6


async def main(url: str) -> None:
    pools = (ConnectionPool, BlockingConnectionPool, WaitingConnectionPool)
    for round_ in range(2):
        for what, args in (("no arguments", ()), ("37 arguments", SETUP_ARGS)):
            for pool in pools:
                us = await measure(url, pool, args)
                print(
                    f"round {round_ + 1}: {pool.__name__:24s} {us:6.1f} µs CPU per EVALSHA, {what}"
                )


if __name__ == "__main__":
    redis = RedisProc(Path(tempfile.mkdtemp(prefix="msrpgw-micro-redis-")))
    redis.start()
    try:
        try:
            import uvloop
        except ImportError:
            asyncio.run(main(redis.url))
        else:
            uvloop.run(main(redis.url))
    finally:
        redis.stop()
    sys.exit(0)
