"""Gateway events on Redis pub/sub (channel `<prefix>:events`, default `msrpgw:events`).

Envelope, version 1 (JSON object):
    {"v": 1, "event": "E_MSRP_GW_SETUP_FAILED", "ts": 1700000000.123, "node": "gw1",
     "data": {"key": ..., "from_uri": ..., "to_uri": ..., "ruri": ..., "code": 408,
              "reason": null}}
`v` changes only on an incompatible change of the envelope; new events and new `data` fields
are compatible additions. Pub/sub is at-most-once: a consumer sees only what is published
while it is subscribed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from gw.store.keys import KeySpace

__all__ = ["ENVELOPE_VERSION", "EventBus", "EventSubscription"]

ENVELOPE_VERSION = 1
log = logging.getLogger(__name__)


class EventBus:
    def __init__(
        self,
        redis: Redis,
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

    async def publish(self, name: str, data: Mapping[str, Any]) -> int:
        """Publish one event; returns how many subscribers received it."""
        payload = json.dumps(self.envelope(name, data), ensure_ascii=False, default=str)
        return int(await self.redis.publish(self.channel, payload))

    def subscribe(self) -> EventSubscription:
        """`async with bus.subscribe() as events: async for event in events: ...`
        (the subscription is in place when the `async with` body starts)."""
        return EventSubscription(self.redis, self.channel)


class EventSubscription:
    """Async iterator of envelopes (dicts); malformed messages are logged and skipped."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self._redis = redis
        self._channel = channel
        self._pubsub: PubSub | None = None

    async def open(self) -> None:
        if self._pubsub is None:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._channel)
            self._pubsub = pubsub

    async def aclose(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            await pubsub.aclose()  # type: ignore[no-untyped-call]

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
        assert self._pubsub is not None
        while True:
            msg = await self._pubsub.get_message(timeout=None)
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
