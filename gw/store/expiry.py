"""Expiry notifications: turns `expired` keyevents of deadline keys into session-end calls.

Notifications are fire-and-forget: anything missed while disconnected is found by
`SessionStore.expired_sweep`. A restarted server forgets a CONFIG SET, so the flags are
re-applied at every (re)subscription, including redis-py's own transparent reconnects (seen
as a fresh `psubscribe` confirmation). A half-open connection is detected by PINGs.

On Redis Cluster each primary reports only its own keys: the listener keeps one pub/sub
connection per primary (a plain client to that node) and re-reads the topology every
`refresh_interval` seconds and soon after a connection fails, so it follows new primaries,
failovers and removed nodes. A primary that appears is configured (`Ex`) like a single
server. Keys moved to a primary before its subscription is in place are left to the sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from gw.store.client import StoreClient, node_client, primaries
from gw.store.keys import KeySpace

__all__ = ["ExpiryListener", "ensure_expired_events"]

log = logging.getLogger(__name__)

PATTERN = "__keyevent@*__:expired"
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


async def ensure_expired_events(redis: StoreClient) -> bool:
    """Add `E` and `x` to notify-keyspace-events, keeping the flags already set (on every
    primary of a cluster). False (with a warning) where CONFIG is not allowed, e.g. on
    managed services."""
    if isinstance(redis, RedisCluster):
        results = []
        for node in await primaries(redis):
            client = node_client(redis, node)
            try:
                results.append(await ensure_expired_events(client))
            finally:
                await client.aclose()
        return all(results)
    try:
        reply = await redis.config_get("notify-keyspace-events")
        flags = _text(next(iter(reply.values()), ""))
        missing = ("" if "E" in flags else "E") + ("" if "x" in flags or "A" in flags else "x")
        if missing:
            await redis.config_set("notify-keyspace-events", flags + missing)
    except ResponseError as exc:
        log.warning(
            "cannot enable expiry notifications (%s): set notify-keyspace-events to include "
            "'Ex' on the server, or expired sessions end only at the periodic sweep",
            exc,
        )
        return False
    return True


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _cancel(task: asyncio.Task[None]) -> None:
    """Cancel until done: on Python 3.11, redis-py's asyncio.wait_for (socket_timeout set)
    can swallow a cancellation that lands as a write completes."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class _Feed:
    """One server's PSUBSCRIBE loop: resubscribes with backoff until stopped."""

    def __init__(self, listener: ExpiryListener, redis: Redis, name: str, owned: bool) -> None:
        self.listener = listener
        self.redis = redis
        self.name = name  # host:port on a cluster, "" for a single server
        self.owned = owned  # a client made for this feed (closed with it)
        self.ready = False
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"expiry-listener {self.name}".strip())

    async def stop(self) -> None:
        self.stopping = True
        if self.task is not None:
            await _cancel(self.task)
            self.task = None
        self._set_ready(False)
        if self.owned:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    def _set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.listener._feed_changed(self, lost=not ready)

    async def _run(self) -> None:
        listener = self.listener
        while not self.stopping:
            try:
                pubsub = await self._subscribe()
            except Exception:  # not a connection problem, e.g. an ACL refusing PSUBSCRIBE
                log.exception("expiry listener cannot subscribe%s", self._where())
                await asyncio.sleep(listener.max_backoff)
                continue
            try:
                await self._pump(pubsub)
            except _LOST as exc:
                log.warning("expiry listener lost Redis%s (%s); resubscribing", self._where(), exc)
            except Exception:
                log.exception("expiry listener failed%s; resubscribing", self._where())
                await asyncio.sleep(listener.max_backoff)
            finally:
                self._set_ready(False)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

    def _where(self) -> str:
        return f" on {self.name}" if self.name else ""

    async def _subscribe(self) -> PubSub:
        max_backoff = self.listener.max_backoff
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.05, max=max_backoff)
            + wait_random(0, max_backoff / 4),
            retry=retry_if_exception_type(_LOST),
            before_sleep=self._before_retry,
        )
        return await retrying(self._subscribe_once)

    def _before_retry(self, state: Any) -> None:
        error = state.outcome.exception() if state.outcome else None
        if state.attempt_number == 1:  # one warning per outage; the tries after it are debug
            log.warning("expiry listener cannot subscribe%s: %s; retrying", self._where(), error)
        else:
            log.debug(
                "expiry listener still cannot subscribe%s (try %d): %s",
                self._where(),
                state.attempt_number,
                error,
            )
        self.listener._feed_changed(self, lost=True)

    async def _subscribe_once(self) -> PubSub:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.psubscribe(PATTERN)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            raise
        return pubsub

    async def _pump(self, pubsub: PubSub) -> None:
        listener = self.listener
        ping_interval = listener.ping_interval
        loop = asyncio.get_running_loop()
        last_heard, ping_sent = loop.time(), 0.0
        while not self.stopping:
            msg = await pubsub.get_message(timeout=min(1.0, ping_interval))
            now = loop.time()
            if msg is not None:
                last_heard = now
                if msg["type"] == "pmessage":
                    key = listener.keys.key_of_deadline(msg["data"])
                    if key is not None:
                        await listener._dispatch(key)
                elif msg["type"] == "psubscribe":
                    await self._subscribed()
            if ping_sent > last_heard:  # a PING is outstanding
                if now - ping_sent > ping_interval:
                    raise RedisConnectionError("no reply to PING on the pub/sub connection")
            elif now - last_heard >= ping_interval:
                await pubsub.ping()
                ping_sent = now

    async def _subscribed(self) -> None:
        listener = self.listener
        if listener.configure:
            await ensure_expired_events(self.redis)
        listener.subscriptions += 1
        self._set_ready(True)
        log.info("expiry listener subscribed%s (%d)", self._where(), listener.subscriptions)


class ExpiryListener:
    """Calls `callback(session_key)` when a session's deadline key of this prefix expires.

    `redis` is a single server's client or a RedisCluster; on a cluster, every primary is
    listened to and the set of primaries is re-read every `refresh_interval` seconds (and
    after a connection fails, at most once per `max_backoff`)."""

    def __init__(
        self,
        redis: StoreClient,
        callback: Callable[[str], Awaitable[None]],
        *,
        prefix: str = "msrpgw",
        configure: bool = True,
        max_concurrency: int = 64,
        ping_interval: float = 10.0,
        max_backoff: float = 5.0,
        refresh_interval: float = 10.0,
    ) -> None:
        self.redis = redis
        self.callback = callback
        self.keys = KeySpace(prefix)
        self.configure = configure
        self.ping_interval = ping_interval
        self.max_backoff = max_backoff
        self.refresh_interval = refresh_interval
        self.subscriptions = 0  # successful (re)subscriptions, all nodes, for health and tests
        self.topology_refreshes = 0  # successful topology reads (cluster), for tests
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeds: dict[str, _Feed] = {}
        self._runner: asyncio.Task[None] | None = None
        self._refresh = asyncio.Event()
        self._stopping = False

    @property
    def ready(self) -> bool:
        """Subscribed on the server (on every known primary of a cluster)."""
        return self._ready.is_set()

    @property
    def nodes(self) -> list[str]:
        """host:port of the primaries listened to (cluster); [""] for a single server."""
        return sorted(self._feeds)

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def start(self) -> None:
        if self._runner is not None:
            return
        self._stopping = False
        if isinstance(self.redis, RedisCluster):
            self._runner = asyncio.create_task(self._follow(self.redis), name="expiry-topology")
        else:
            feed = _Feed(self, self.redis, "", owned=False)
            self._feeds[""] = feed
            feed.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; callbacks in flight get `timeout` seconds, then are cancelled."""
        self._stopping = True
        if self._runner is not None:
            await _cancel(self._runner)
            self._runner = None
        feeds, self._feeds = list(self._feeds.values()), {}
        await asyncio.gather(*(feed.stop() for feed in feeds))
        self._ready.clear()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _feed_changed(self, feed: _Feed, *, lost: bool) -> None:
        if lost and feed.name:
            self._refresh.set()  # the topology may have changed: re-read it soon
        self._update_ready()

    def _update_ready(self) -> None:
        if self._feeds and all(f.ready for f in self._feeds.values()):
            self._ready.set()
        else:
            self._ready.clear()

    async def _follow(self, cluster: RedisCluster) -> None:
        """Cluster: keep one feed per primary, re-reading the topology periodically."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            started = loop.time()
            self._refresh.clear()
            try:
                nodes = await primaries(cluster, refresh=True)
            except Exception as exc:
                log.warning("expiry listener cannot read the cluster topology: %s", exc)
                wait = self.max_backoff
            else:
                self.topology_refreshes += 1
                await self._reconcile(cluster, nodes)
                wait = self.refresh_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), wait)
            # a burst of failures costs one topology read per max_backoff, not one each
            await asyncio.sleep(max(0.0, min(self.max_backoff, wait) - (loop.time() - started)))

    async def _reconcile(self, cluster: RedisCluster, nodes: list[ClusterNode]) -> None:
        current = {str(node.name): node for node in nodes}
        for name in [n for n in self._feeds if n not in current]:
            log.info("expiry listener: %s is no longer a primary; unsubscribing", name)
            await self._feeds.pop(name).stop()
        for name, node in current.items():
            if name not in self._feeds:
                log.info("expiry listener: subscribing on primary %s", name)
                feed = _Feed(self, node_client(cluster, node), name, owned=True)
                self._feeds[name] = feed
                feed.start()
        self._update_ready()

    async def _dispatch(self, key: str) -> None:
        await self._slots.acquire()  # backpressure: stop reading while the callbacks are full
        task = asyncio.create_task(self._call(key))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _call(self, key: str) -> None:
        try:
            await self.callback(key)
        except Exception:
            log.exception("session expiry handler failed for %r", key)
