"""Gateway events on Redis pub/sub (channel `<prefix>:events`, default `msrpgw:events`).

Envelope, version 1 (JSON object):
    {"v": 1, "event": "E_MSRP_GW_SETUP_FAILED", "ts": 1700000000.123, "node": "gw1",
     "data": {"key": ..., "from_uri": ..., "to_uri": ..., "ruri": ..., "code": 408,
              "reason": null}}
`v` changes only on an incompatible change of the envelope; new events and new `data` fields
are compatible additions. Pub/sub is at-most-once: a consumer sees only what is published
while it is subscribed.

Redis Cluster: a PUBLISH reaches subscribers on every node, so an external consumer may
subscribe on any node. `EventSubscription` subscribes on the primary that owns the
channel's slot (where RedisCluster sends the PUBLISH, so `publish()` counts it) and moves to
the channel's new home if its node fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gw.store.client import StoreClient, pubsub_client, refresh_topology, release_pubsub_client
from gw.store.keys import KeySpace

__all__ = ["ENVELOPE_VERSION", "EventBus", "EventSubscription"]

ENVELOPE_VERSION = 1
log = logging.getLogger(__name__)


class EventBus:
    def __init__(
        self,
        redis: StoreClient,
        *,
        node: str,
        prefix: str = "msrpgw",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = redis
        self.node = node
        self.channel = KeySpace(prefix).events
        self.clock = clock

    def envelope(self, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "event": name,
            "ts": self.clock(),
            "node": self.node,
            "data": dict(data),
        }

    def payload(self, name: str, data: Mapping[str, Any]) -> str:
        """The envelope as published (JSON text)."""
        return json.dumps(self.envelope(name, data), ensure_ascii=False, default=str)

    async def publish(self, name: str, data: Mapping[str, Any]) -> int:
        """Publish one event; returns how many subscribers received it (on a cluster: how many
        on the channel's node, which includes every `EventSubscription`)."""
        return int(await self.redis.publish(self.channel, self.payload(name, data)))

    def subscribe(self) -> EventSubscription:
        """`async with bus.subscribe() as events: async for event in events: ...`
        (the subscription is in place when the `async with` body starts)."""
        return EventSubscription(self.redis, self.channel)


class EventSubscription:
    """Async iterator of envelopes (dicts); malformed messages are logged and skipped.

    On a single server a lost connection ends the iteration with the error (after redis-py's
    own reconnection attempts). On a cluster the subscription re-reads the topology and
    re-subscribes on the channel's (possibly new) node for up to `repick_for` seconds;
    events published meanwhile are lost (at-most-once)."""

    def __init__(self, redis: StoreClient, channel: str, *, repick_for: float = 15.0) -> None:
        self._redis = redis
        self._channel = channel
        self._repick_for = repick_for
        self._sub: Redis | None = None
        self._pubsub: PubSub | None = None

    @property
    def node(self) -> str | None:
        """host:port of the subscribed node (None until open)."""
        if self._sub is None:
            return None
        kwargs = self._sub.connection_pool.connection_kwargs
        host = kwargs.get("host")
        return f"{host}:{kwargs.get('port')}" if host else None

    async def open(self) -> None:
        if self._pubsub is not None:
            return
        sub = await pubsub_client(self._redis, self._channel)
        try:
            pubsub = sub.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
            except BaseException:
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
                raise
        except BaseException:
            await release_pubsub_client(self._redis, sub)
            raise
        self._sub, self._pubsub = sub, pubsub

    async def aclose(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        sub, self._sub = self._sub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
        if sub is not None:
            await release_pubsub_client(self._redis, sub)

    async def _repick(self, cluster: RedisCluster, error: Exception) -> None:
        """Cluster: subscribe again on the channel's node, after re-reading the topology."""
        log.warning("event subscription lost %s (%s); re-subscribing", self.node, error)
        await self.aclose()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._repick_for
        delay = 0.1
        while True:
            try:
                await refresh_topology(cluster)
                await self.open()
                return
            except (RedisError, OSError):
                if loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def __aenter__(self) -> EventSubscription:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        await self.open()
        while True:
            assert self._pubsub is not None
            try:
                msg = await self._pubsub.get_message(timeout=None)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if not isinstance(self._redis, RedisCluster):
                    raise
                await self._repick(self._redis, exc)
                continue
            if msg is None or msg["type"] != "message":
                continue
            try:
                event = json.loads(msg["data"])
            except ValueError:
                log.warning("skipping a malformed event: %r", msg["data"][:200])
                continue
            if isinstance(event, dict):
                return event
            log.warning("skipping a non-object event: %r", msg["data"][:200])
