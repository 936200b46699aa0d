"""The session table (ARCHITECTURE §3): one hash per session plus a deadline key.

The deadline key expires when the session is due to end; its `expired` notification tells the
owner to end it. The hash lives `grace` seconds longer so it can still be read then; keep
`grace` above `cleanup_interval`, or a session whose notification was lost expires before the
sweep sees it. Every write is one Lua script (one round trip, atomic, Cluster-safe: a
session's keys share a hash tag); `touch` is the hot path.

Works on a single Redis (or a Sentinel-managed master) and on Redis Cluster alike: scripts
are routed by their keys' slot, scans visit every primary (`gw.store.client.scan_batches`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, cast

from redis.exceptions import NoScriptError

from gw.store import lua
from gw.store.client import StoreClient, decodes_responses, scan_batches
from gw.store.keys import KeySpace
from gw.store.records import (
    FIELDS,
    SessionRecord,
    decode_record,
    encode_fields,
    record_fields,
)

__all__ = ["SessionNotFound", "SessionRecord", "SessionStore", "scan_batch"]

_TIMESTAMPS = frozenset({"created", "last_message", "last_send"})


class SessionNotFound(KeyError):
    """The session is gone (ended, expired, or never created)."""


class _Script:
    """EVALSHA routed by its keys (a cluster sends it to the keys' slot); on NOSCRIPT (a
    restarted server, a new primary) one SCRIPT LOAD, to every primary of a cluster, is
    shared by all the calls that hit it at the same time, then the call is retried."""

    def __init__(self, redis: StoreClient, text: str) -> None:
        self.redis = redis
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self._loading: asyncio.Future[Any] | None = None

    async def __call__(self, keys: Sequence[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load()
            return await self.redis.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self) -> None:
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self.redis.script_load(self.text))
        await asyncio.shield(self._loading)


def scan_batch(hash_size: int) -> int:
    """SCAN COUNT for a table of about 2**hash_size sessions, bounded to keep Redis responsive."""
    return max(100, min(1 << hash_size, 5000))


def check_binary_client(redis: StoreClient) -> None:
    """msgpack fields need raw bytes: refuse a client that decodes responses."""
    if decodes_responses(redis):
        raise ValueError("the store needs a Redis client with decode_responses=False")


class SessionStore:
    """The table for one key prefix; times are wall-clock epoch seconds (shared by nodes)."""

    def __init__(
        self,
        redis: StoreClient,
        *,
        prefix: str = "msrpgw",
        session_timeout: float = 43200,
        message_timeout: float = 7200,
        grace: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_binary_client(redis)
        if session_timeout <= 0 or message_timeout <= 0 or grace < 0:
            raise ValueError("timeouts must be positive and grace non-negative")
        self.redis = redis
        self.keys = KeySpace(prefix)
        self.session_timeout = float(session_timeout)
        self.message_timeout = float(message_timeout)
        self.grace = float(grace)
        self.clock = clock
        self._create = _Script(redis, lua.CREATE)
        self._create_or_get = _Script(redis, lua.CREATE_OR_GET)
        self._touch = _Script(redis, lua.TOUCH)
        self._update = _Script(redis, lua.UPDATE)
        self._sweep = _Script(redis, lua.SWEEP)
        self._delete = _Script(redis, lua.DELETE)
        self._claim = _Script(redis, lua.CLAIM)

    def _names(self, key: str) -> list[str]:
        return [self.keys.session(key), self.keys.deadline(key)]

    def _head(self, now: float) -> list[str]:
        return [repr(now), repr(self.session_timeout), repr(self.message_timeout), repr(self.grace)]

    def deadline(self, record: SessionRecord) -> float:
        """When `record` is due to end (wall clock); the scripts compute the same value."""
        last_message = max(record.created, record.last_message)
        last_any = max(last_message, record.last_send)
        return min(last_any + self.session_timeout, last_message + self.message_timeout)

    async def create(self, record: SessionRecord) -> bool:
        """Store `record` only if no session has its key. Zero timestamps are set to now
        (in `record` too): both timeouts count from creation."""
        args = self._create_args(record)
        return bool(await self._create(keys=self._names(record.key), args=args))

    async def create_or_get(self, record: SessionRecord) -> SessionRecord | None:
        """`create`, in one round trip with the read that usually precedes it: None when
        `record` was stored, else the session that holds the key (stored unchanged)."""
        args = self._create_args(record)
        reply = await self._create_or_get(keys=self._names(record.key), args=args)
        if not isinstance(reply, list):
            return None
        flat = cast(list[bytes], reply)
        return decode_record(record.key, dict(zip(flat[::2], flat[1::2], strict=True)))

    def _create_args(self, record: SessionRecord) -> list[str | bytes]:
        """CREATE's ARGV; fills `record`'s zero timestamps with now."""
        if not record.key:
            raise ValueError("session key must not be empty")
        now = self.clock()
        record.created = record.created or now
        record.last_message = record.last_message or record.created
        record.last_send = record.last_send or record.created
        return [*self._head(now), *encode_fields(record_fields(record))]

    async def get(self, key: str) -> SessionRecord | None:
        raw = cast(dict[bytes, bytes], await self.redis.hgetall(self.keys.session(key)))
        return decode_record(key, raw) if raw else None

    async def sids(self, keys: Sequence[str]) -> list[str | None]:
        """The sid of each key's record (None: no record; "": one written without a sid), in
        one pipelined round trip: an owner finds its sessions that lost their record, or
        whose key another instance holds now."""
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:  # `state` is in every record: nil means there is none
                pipe.hmget(self.keys.session(key), "sid", "state")
            found = await pipe.execute()
        return [None if state is None else (sid or b"").decode() for sid, state in found]

    async def touch(self, key: str, *, page_message: bool, now: float, sid: str = "") -> None:
        """Record activity (page-mode MESSAGE or MSRP SEND) and push the deadline: one EVALSHA.
        Raises SessionNotFound when the session is gone (with `sid`: or another instance's)."""
        field = "last_message" if page_message else "last_send"
        args = [*self._head(now), field, sid]
        if not await self._touch(keys=self._names(key), args=args):
            raise SessionNotFound(key)

    async def update(self, key: str, **fields: Any) -> bool:
        """Set fields of an existing session (never recreates one); False if it is gone.
        Changing a timestamp recomputes the deadline."""
        if not fields:
            return await self.redis.exists(self.keys.session(key)) == 1
        return await self._update_fields(key, fields, "", "", "")

    async def update_session(
        self,
        key: str,
        sid: str,
        fields: Mapping[str, Any],
        channel: str = "",
        payload: str = "",
    ) -> bool:
        """`update` of instance `sid`'s record only, and when it was updated, PUBLISH `payload`
        on `channel` (if given) in the same round trip: a set-up's state change and its event
        cost one command, not two. False: gone, or the key is another instance's now."""
        return await self._update_fields(key, fields, channel, payload, sid)

    async def _update_fields(
        self, key: str, fields: Mapping[str, Any], channel: str, payload: str, sid: str
    ) -> bool:
        unknown = set(fields) - FIELDS
        if unknown:
            raise TypeError(f"unknown session fields: {sorted(unknown)}")
        rearm = b"1" if _TIMESTAMPS & set(fields) else b"0"
        args: list[str | bytes] = [*self._head(self.clock()), channel, payload, rearm, sid]
        args += encode_fields(fields)
        return bool(await self._update(keys=self._names(key), args=args))

    async def delete(self, key: str, *, owner: str | None = None, sid: str = "") -> bool:
        """Remove the session and its deadline (no `expired` event); with `owner`, only if
        that node still owns it, so a node never deletes a session taken over meanwhile;
        with `sid`, only if that instance still holds the key, so a replaced or superseded
        session never deletes its successor's record."""
        args = [owner or "", sid]
        return bool(await self._delete(keys=self._names(key), args=args))

    async def claim(self, key: str, *, expected_owner: str, new_owner: str) -> SessionRecord | None:
        """Take a session over: compare-and-set of the owner, epoch + 1. None if the owner
        was not `expected_owner` (someone else won) or the session is gone."""
        reply = await self._claim(keys=[self.keys.session(key)], args=[expected_owner, new_owner])
        if not reply:
            return None
        flat = cast(list[bytes], reply)
        return decode_record(key, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def _scan(self, count: int) -> AsyncIterator[list[str]]:
        """Batches of session keys (every primary of a cluster); repeats are dropped."""
        seen: set[str] = set()
        async for names in scan_batches(self.redis, self.keys.session_pattern(), count):
            batch = []
            for name in names:
                key = self.keys.key_of_session(name)
                if key is not None and key not in seen:
                    seen.add(key)
                    batch.append(key)
            if batch:
                yield batch

    async def iter_sessions(self, count: int = 1000) -> AsyncIterator[SessionRecord]:
        """Every session, in SCAN order: one SCAN plus one pipelined HGETALL per batch."""
        async for batch in self._scan(count):
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.hgetall(self.keys.session(key))
                raws = await pipe.execute()
            for key, raw in zip(batch, raws, strict=True):
                if raw:  # ended between SCAN and HGETALL
                    yield decode_record(key, raw)

    async def expired_sweep(self, now: float | None = None, *, count: int = 1000) -> list[str]:
        """Keys of sessions past their deadline whose deadline key is gone: what expiry
        notifications missed. A deadline key lost early (eviction, manual DEL) is re-armed.
        A key may also be in flight from a notification: ending a session must be idempotent."""
        now = self.clock() if now is None else now
        head = self._head(now)
        expired: list[str] = []
        async for batch in self._scan(count):
            try:
                results = await self._sweep_batch(batch, head)
            except NoScriptError:  # not cached on some server (restart, new primary)
                await self._sweep.load()
                results = await self._sweep_batch(batch, head)
            expired += [key for key, res in zip(batch, results, strict=True) if res == 1]
        return expired

    async def _sweep_batch(self, batch: list[str], head: list[str]) -> list[Any]:
        """One pipelined EVALSHA per key. (A cluster pipeline refuses `evalsha()` and script
        objects, so the command is queued raw; the SWEEP script is safe to run twice.)"""
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in batch:
                pipe.execute_command("EVALSHA", self._sweep.sha, 2, *self._names(key), *head)
            return await pipe.execute()
