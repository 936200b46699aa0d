"""Node registry: a heartbeat key per node with a short TTL (ARCHITECTURE §4).

A node whose key expired is dead: its sessions are orphans that the next node
to see a MESSAGE for them takes over. Liveness answers are cached briefly so a
burst of forwarded MESSAGEs costs one EXISTS, not one each. On Redis Cluster the heartbeat
keys spread over the primaries; `nodes()` scans every primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from gw.store.client import StoreClient, scan_batches

__all__ = ["NodeRegistry"]

log = logging.getLogger("gw.cluster")


class NodeRegistry:
    def __init__(
        self,
        redis: StoreClient,
        node_id: str,
        *,
        prefix: str = "msrpgw",
        ttl: float = 3.0,
        info: dict[str, Any] | None = None,
        cache_for: float = 0.5,
    ) -> None:
        if ttl <= 0:
            raise ValueError("heartbeat ttl must be > 0")
        self.redis = redis
        self.node_id = node_id
        self.prefix = prefix
        self.ttl = ttl
        self.info = info or {}
        self.cache_for = cache_for
        self.last_beat = 0.0  # monotonic time of the last successful heartbeat
        self._cache: dict[str, tuple[float, bool]] = {}
        self._task: asyncio.Task[None] | None = None

    def key(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    @property
    def heartbeat_age(self) -> float:
        return time.monotonic() - self.last_beat if self.last_beat else float("inf")

    async def beat(self) -> None:
        payload = json.dumps({**self.info, "node": self.node_id, "ts": time.time()})
        await self.redis.set(self.key(self.node_id), payload, px=int(self.ttl * 1000))
        self.last_beat = time.monotonic()

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.beat()
            except (RedisError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def stop(self, *, deregister: bool = True) -> None:
        if self._task is not None:
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.1)
            self._task = None
        if deregister:
            with contextlib.suppress(RedisError, OSError):
                await self.redis.delete(self.key(self.node_id))

    async def alive(self, node_id: str) -> bool:
        if node_id == self.node_id:
            return True
        now = time.monotonic()
        cached = self._cache.get(node_id)
        if cached is not None and now - cached[0] < self.cache_for:
            return cached[1]
        result = bool(await self.redis.exists(self.key(node_id)))
        self._cache[node_id] = (now, result)
        return result

    def forget(self, node_id: str) -> None:
        """Drop a cached answer (e.g. after a forward to that node failed)."""
        self._cache.pop(node_id, None)

    async def nodes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        seen: set[bytes] = set()
        async for batch in scan_batches(self.redis, f"{self.prefix}:node:*", 500):
            names = [name for name in batch if name not in seen]
            seen.update(names)
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.get(name)
                values = await pipe.execute()
            for raw in values:
                if raw is not None:
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(raw))
        return out
