"""Expiry notifications: turns `expired` keyevents of deadline keys into session-end calls.

Notifications are fire-and-forget: anything missed while disconnected is found by
`SessionStore.expired_sweep`. A restarted server forgets a CONFIG SET, so the flags are
re-applied at every (re)subscription, including redis-py's own transparent reconnects (seen
as a fresh `psubscribe` confirmation). A half-open connection is detected by PINGs.
On Redis Cluster each primary reports only its own keys: run one listener per primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential, wait_random

from gw.store.keys import KeySpace

__all__ = ["ExpiryListener", "ensure_expired_events"]

log = logging.getLogger(__name__)

PATTERN = "__keyevent@*__:expired"
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


async def ensure_expired_events(redis: Redis) -> bool:
    """Add `E` and `x` to notify-keyspace-events, keeping the flags already set.
    False (with a warning) where CONFIG is not allowed, e.g. on managed services."""
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


class ExpiryListener:
    """Calls `callback(session_key)` when a session's deadline key of this prefix expires."""

    def __init__(
        self,
        redis: Redis,
        callback: Callable[[str], Awaitable[None]],
        *,
        prefix: str = "msrpgw",
        configure: bool = True,
        max_concurrency: int = 64,
        ping_interval: float = 10.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.redis = redis
        self.callback = callback
        self.keys = KeySpace(prefix)
        self.configure = configure
        self.ping_interval = ping_interval
        self.max_backoff = max_backoff
        self.subscriptions = 0  # successful (re)subscriptions, for health and tests
        self._ready = asyncio.Event()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)

    async def start(self) -> None:
        if self._runner is None:
            self._stopping = False
            self._runner = asyncio.create_task(self._run(), name="expiry-listener")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop listening; callbacks in flight get `timeout` seconds, then are cancelled."""
        self._stopping = True
        if self._runner is not None:
            # Cancel until done: on Python 3.11, redis-py's asyncio.wait_for (socket_timeout
            # set) can swallow a cancellation that lands as a write completes.
            while not self._runner.done():
                self._runner.cancel()
                await asyncio.wait({self._runner}, timeout=0.1)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self._runner.result()
            self._runner = None
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                pubsub = await self._subscribe()
            except Exception:  # not a connection problem, e.g. an ACL refusing PSUBSCRIBE
                log.exception("expiry listener cannot subscribe")
                await asyncio.sleep(self.max_backoff)
                continue
            try:
                await self._pump(pubsub)
            except _LOST as exc:
                log.warning("expiry listener lost Redis (%s); resubscribing", exc)
            except Exception:
                log.exception("expiry listener failed; resubscribing")
                await asyncio.sleep(self.max_backoff)
            finally:
                self._ready.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _subscribe(self) -> PubSub:
        retrying = AsyncRetrying(
            wait=wait_exponential(multiplier=0.05, max=self.max_backoff)
            + wait_random(0, self.max_backoff / 4),
            retry=retry_if_exception_type(_LOST),
            before_sleep=lambda state: log.warning(
                "expiry listener cannot subscribe (attempt %d): %s",
                state.attempt_number,
                state.outcome.exception() if state.outcome else None,
            ),
        )
        return await retrying(self._subscribe_once)

    async def _subscribe_once(self) -> PubSub:
        pubsub = self.redis.pubsub()
        try:
            await pubsub.psubscribe(PATTERN)
        except BaseException:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        return pubsub

    async def _pump(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        last_heard, ping_sent = loop.time(), 0.0
        while not self._stopping:
            msg = await pubsub.get_message(timeout=min(1.0, self.ping_interval))
            now = loop.time()
            if msg is not None:
                last_heard = now
                if msg["type"] == "pmessage":
                    key = self.keys.key_of_deadline(msg["data"])
                    if key is not None:
                        await self._dispatch(key)
                elif msg["type"] == "psubscribe":
                    await self._subscribed()
            if ping_sent > last_heard:  # a PING is outstanding
                if now - ping_sent > self.ping_interval:
                    raise RedisConnectionError("no reply to PING on the pub/sub connection")
            elif now - last_heard >= self.ping_interval:
                await pubsub.ping()
                ping_sent = now

    async def _subscribed(self) -> None:
        if self.configure:
            await ensure_expired_events(self.redis)
        self.subscriptions += 1
        self._ready.set()
        log.info("expiry listener subscribed (%d)", self.subscriptions)

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
