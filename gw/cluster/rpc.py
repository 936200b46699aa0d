"""Node-to-node request/reply over Redis pub/sub: one inbox channel per node.

Pub/sub is at-most-once, so every call has a timeout and a caller that times out
must not claim success (the MESSAGE it forwards gets an error, never a 2xx).
PUBLISH returns the number of receivers: 0 means the owner is not listening, which
the caller learns at once instead of waiting for the timeout.

Redis Cluster delivers a PUBLISH to subscribers on every node but counts only those on the
node that received it. RedisCluster sends PUBLISH to the primary owning the channel's slot,
so each inbox is subscribed on that same primary (`gw.store.client.pubsub_client`) and the
count stays exact. Each Rpc re-reads the slot map every `refresh_interval` seconds; when the
inbox's slot moved (resharding, failover) the subscriber follows it (at once if its node
fails). A caller whose PUBLISH counts nobody re-reads the map first: if the target inbox
moved, the message went out anyway, so it waits for the reply rather than reporting
NodeUnreachable. Left: a subscriber that has not followed its slot yet (at most
`refresh_interval`) receives a call whose caller was told NodeUnreachable.
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
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gw.backoff import Outage
from gw.cluster.messages import RpcReply, RpcRequest, decode_reply, encode_request
from gw.store.client import (
    StoreClient,
    channel_home,
    pubsub_client,
    refresh_topology,
    release_pubsub_client,
)

__all__ = ["NodeUnreachable", "Rpc"]

log = logging.getLogger("gw.cluster.rpc")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class NodeUnreachable(Exception):
    """No node listens on the target inbox (dead, or partitioned from Redis)."""


class Rpc:
    def __init__(
        self,
        redis: StoreClient,
        node_id: str,
        handler: Handler,
        *,
        prefix: str = "msrpgw",
        refresh_interval: float = 5.0,
    ) -> None:
        self.redis = redis
        self.refresh_interval = refresh_interval
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
        inbox = self.inbox(self.node_id)
        outage = Outage("rpc inbox", log)
        while True:
            sub: Redis | None = None
            pubsub: PubSub | None = None
            try:
                sub = await pubsub_client(self.redis, inbox)
                home = channel_home(self.redis, inbox)
                pubsub = sub.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(inbox)
                self._ready.set()
                outage.recovered()
                await self._pump(pubsub, inbox, home)
                log.info("rpc inbox moved from %s; resubscribing", home)
            except (RedisError, OSError) as exc:
                self._ready.clear()
                delay = outage.failed(exc)
                if isinstance(self.redis, RedisCluster):
                    with contextlib.suppress(Exception):
                        await refresh_topology(self.redis)
                await asyncio.sleep(delay)
            except Exception:  # a bug or a misconfigured client must not kill the inbox silently
                self._ready.clear()
                log.exception("rpc inbox failed; resubscribing")
                await asyncio.sleep(outage.cap)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await release_pubsub_client(self.redis, sub)

    async def _pump(self, pubsub: PubSub, inbox: str, home: str | None) -> None:
        """Serve the inbox; returns when (on a cluster) the inbox's slot moved elsewhere."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + self.refresh_interval
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is not None and msg.get("type") == "message":
                self._dispatch(msg["data"])
            if home is not None and loop.time() >= next_check:
                next_check = loop.time() + self.refresh_interval
                if isinstance(self.redis, RedisCluster):
                    try:
                        await refresh_topology(self.redis)
                    except (RedisError, OSError) as exc:
                        log.debug("rpc: cannot refresh the cluster topology: %s", exc)
                if channel_home(self.redis, inbox) != home:
                    return

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

    async def _home_moved(self, inbox: str, home: str | None) -> bool:
        """Cluster, PUBLISH counted nobody: True if our slot map was stale (the inbox's slot
        is elsewhere now). The message then went out cluster-wide to a subscriber we could
        not count, so the caller waits for the reply (or times out) instead of reporting
        NodeUnreachable for a message that may be handled."""
        if home is None or not isinstance(self.redis, RedisCluster):
            return False
        try:
            await refresh_topology(self.redis)
        except (RedisError, OSError):
            return False
        moved = channel_home(self.redis, inbox) != home
        if moved:
            log.info("rpc: %s moved from %s; waiting for the reply", inbox, home)
        return moved

    async def ask(self, target: str, request: RpcRequest, timeout: float) -> RpcReply:
        """`call` with a typed request and reply (gw.cluster.messages); BadRpc for a
        reply that is none of ours. NodeUnreachable, TimeoutError as `call`."""
        return decode_reply(await self.call(target, encode_request(request), timeout))

    async def call(self, target: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send `payload` to `target`'s handler and return its reply.

        NodeUnreachable when nobody listens; TimeoutError when no reply comes in time.
        """
        self.stats["calls"] += 1
        if not self._ready.is_set():
            # Our inbox is resubscribing (e.g. Redis just restarted): a reply now would be
            # published to nobody, and the call would wait its whole timeout for nothing.
            await asyncio.wait_for(self._ready.wait(), timeout)
        call_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        try:
            data = msgpack.packb(
                {**payload, "id": call_id, "from": self.node_id}, use_bin_type=True
            )
            inbox = self.inbox(target)
            home = channel_home(self.redis, inbox)
            receivers = await self.redis.publish(inbox, data)
            if receivers == 0 and not await self._home_moved(inbox, home):
                self.stats["unreachable"] += 1
                raise NodeUnreachable(target)
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.stats["timeouts"] += 1
                raise
        finally:
            self._pending.pop(call_id, None)
