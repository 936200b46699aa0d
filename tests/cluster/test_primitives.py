"""Registry and node-to-node RPC against a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import NodeUnreachable, Rpc


async def test_heartbeat_expires_when_node_stops_beating(redis: Redis, key_prefix: str) -> None:
    a = NodeRegistry(redis, "a", prefix=key_prefix, ttl=0.3, cache_for=0)
    b = NodeRegistry(redis, "b", prefix=key_prefix, ttl=0.3, cache_for=0)
    await a.start()
    await b.start()
    try:
        assert await a.alive("b")
        await asyncio.sleep(0.5)
        assert await a.alive("b"), "b keeps beating"
        await b.stop(deregister=False)  # like SIGKILL: no goodbye
        await asyncio.sleep(0.45)
        assert not await a.alive("b")
        assert {n["node"] for n in await a.nodes()} == {"a"}
    finally:
        await a.stop()
        await b.stop()


async def test_graceful_stop_deregisters(redis: Redis, key_prefix: str) -> None:
    a = NodeRegistry(redis, "a", prefix=key_prefix, ttl=5, cache_for=0)
    b = NodeRegistry(redis, "b", prefix=key_prefix, ttl=5, cache_for=0)
    await a.start()
    await b.start()
    await b.stop()
    assert not await a.alive("b")
    await a.stop()


async def test_rpc_round_trip_with_bytes(redis: Redis, key_prefix: str) -> None:
    async def echo(msg: dict[str, Any]) -> dict[str, Any]:
        return {"status": 200, "body": msg["body"][::-1]}

    async def never(msg: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("not called")

    server = Rpc(redis, "owner", echo, prefix=key_prefix)
    client = Rpc(redis, "front", never, prefix=key_prefix)
    await server.start()
    await client.start()
    try:
        replies = await asyncio.gather(
            *(client.call("owner", {"body": bytes([i, 0, 255])}, 2.0) for i in range(20))
        )
        assert [r["body"] for r in replies] == [bytes([255, 0, i]) for i in range(20)]
        assert server.stats["served"] == 20
    finally:
        await client.stop()
        await server.stop()


async def test_rpc_to_absent_node_fails_fast(redis: Redis, key_prefix: str) -> None:
    async def never(msg: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError

    client = Rpc(redis, "front", never, prefix=key_prefix)
    await client.start()
    try:
        with pytest.raises(NodeUnreachable):
            await client.call("ghost", {"op": "x"}, 5.0)
    finally:
        await client.stop()


async def test_rpc_timeout_when_owner_hangs(redis: Redis, key_prefix: str) -> None:
    async def slow(msg: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(5)
        return {}

    async def never(msg: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError

    server = Rpc(redis, "owner", slow, prefix=key_prefix)
    client = Rpc(redis, "front", never, prefix=key_prefix)
    await server.start()
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.call("owner", {"op": "x"}, 0.2)
        assert client.stats["timeouts"] == 1
    finally:
        await client.stop()
        await server.stop()


async def test_handler_error_becomes_error_reply(redis: Redis, key_prefix: str) -> None:
    async def broken(msg: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("boom")

    async def never(msg: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError

    server = Rpc(redis, "owner", broken, prefix=key_prefix)
    client = Rpc(redis, "front", never, prefix=key_prefix)
    await server.start()
    await client.start()
    try:
        reply = await client.call("owner", {"op": "x"}, 2.0)
        assert reply["error"] == "boom"
    finally:
        await client.stop()
        await server.stop()
