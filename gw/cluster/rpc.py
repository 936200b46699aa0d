"""Node-to-node request/reply over Redis pub/sub: one inbox channel per node.

Pub/sub is at-most-once, so every call has a timeout and a caller that times out
must not claim success (the MESSAGE it forwards gets an error, never a 2xx).
PUBLISH returns the number of receivers: 0 means the owner is not listening, which
the caller learns at once instead of waiting for the timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

__all__ = ["NodeUnreachable", "Rpc"]

log = logging.getLogger("gw.cluster.rpc")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeUnreachable(Exception):
    """No node listens on the target inbox (dead, or partitioned from Redis)."""


class Rpc:
    def __init__(
        self, redis: Redis, node_id: str, handler: Handler, *, prefix: str = "msrpgw"
    ) -> None:
        self.redis = redis
        self.node_id = node_id
        self.handler = handler
        self.prefix = prefix
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"calls": 0, "served": 0, "timeouts": 0, "unreachable": 0}

    def inbox(self, node_id: str) -> str:
        return f"{self.prefix}:inbox:{node_id}"

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="rpc-inbox")
        await asyncio.wait_for(self._ready.wait(), 10)

    async def stop(self) -> None:
        if self._runner is not None:
            while not self._runner.done():
                self._runner.cancel()
                await asyncio.wait({self._runner}, timeout=0.1)
            self._runner = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(NodeUnreachable("stopping"))

    async def _run(self) -> None:
        while True:
            pubsub: PubSub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.inbox(self.node_id))
                self._ready.set()
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is not None and msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except (RedisError, OSError) as exc:
                self._ready.clear()
                log.warning("rpc inbox lost Redis (%s); resubscribing", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, raw: bytes) -> None:
        try:
            msg = msgpack.unpackb(raw, raw=False)
        except (ValueError, msgpack.UnpackException):
            log.warning("malformed rpc message dropped")
            return
        if not isinstance(msg, dict):
            return
        reply_to = msg.get("reply_to")
        if reply_to is not None:
            fut = self._pending.pop(reply_to, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
            return
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: dict[str, Any]) -> None:
        origin, call_id = msg.get("from"), msg.get("id")
        try:
            reply = await self.handler(msg)
        except Exception as exc:  # the caller must get an answer, not a timeout
            log.exception("rpc handler failed")
            reply = {"error": str(exc)}
        self.stats["served"] += 1
        if not isinstance(origin, str) or call_id is None:
            return
        reply = {**reply, "reply_to": call_id}
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(self.inbox(origin), msgpack.packb(reply, use_bin_type=True))

    async def call(self, target: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `payload` to `target`'s handler and return its reply.

        NodeUnreachable when nobody listens; TimeoutError when no reply comes in time.
        """
        self.stats["calls"] += 1
        call_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        try:
            data = msgpack.packb(
                {**payload, "id": call_id, "from": self.node_id}, use_bin_type=True
            )
            receivers = await self.redis.publish(self.inbox(target), data)
            if receivers == 0:
                self.stats["unreachable"] += 1
                raise NodeUnreachable(target)
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.stats["timeouts"] += 1
                raise
        finally:
            self._pending.pop(call_id, None)
