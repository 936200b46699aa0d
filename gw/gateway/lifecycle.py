"""Ending, expiry, rebuilding after Redis loss, draining, and listing sessions."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from redis.exceptions import RedisError

from gw.cluster.messages import BadRpc, Ended, EndSession
from gw.cluster.rpc import NodeUnreachable
from gw.gateway import events as ev
from gw.gateway.base import GatewayBase, log
from gw.gateway.session import GwSession, Outcome
from gw.gateway.state import SessionState
from gw.store.sessions import SessionNotFound


class Lifecycle(GatewayBase):
    async def end_session(self, key: str, reason: str, *, send_bye: bool = True) -> bool:
        session = self.sessions.get(key)
        if session is None:
            rec = await self.store.get(key)  # a store error propagates: "unavailable", not 404
            if rec is None:
                return False
            if await self._owner_elsewhere(rec.owner):
                assert self.rpc is not None
                # The owner holds the dialog and the MSRP connection: it sends the BYE.
                with contextlib.suppress(NodeUnreachable, TimeoutError, BadRpc):
                    reply = await self.rpc.ask(
                        rec.owner, EndSession(key, reason), self.forward_timeout
                    )
                    return isinstance(reply, Ended) and reply.ok
            # Owner dead (or we own a record without live state): clean up the record.
            if not await self.store.delete(key, owner=rec.owner):
                return False
            log.info("session ended: %s (owner %s gone)", reason, rec.owner, extra={"key": key})
            await self._publish(
                ev.SESSION_ENDED,
                {"key": key, "reason": reason, "origin": rec.origin, "owner": rec.owner},
            )
            return True
        if session.state.over:
            return True
        was_setup = session.state.setting_up
        session.transition(SessionState.ENDING)
        self._fail_queue(session, Outcome(480, "Session Ended"))
        if was_setup and session.invite is not None and session.dialog is None:
            with contextlib.suppress(Exception):
                await self.sip.cancel(session.invite)
        if send_bye:
            await self._bye(session)
        await self._forget(session, reason)
        return True

    async def _owner_elsewhere(self, owner: str) -> bool:
        """True when another live node owns it (so it must do the work)."""
        if owner == self.settings.node_id or self.rpc is None or self.registry is None:
            return False
        return await self.registry.alive(owner)

    async def _bye(self, session: GwSession) -> None:
        dialog = session.dialog
        session.dialog = None
        if dialog is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sip.bye(dialog), 64 * self.sip.config.timers.t1)

    async def _forget(self, session: GwSession, reason: str) -> None:
        """Drop the session from this node and the store, once (a set-up ended by MI and
        then failing would otherwise be counted and announced twice)."""
        if session.state is SessionState.ENDED:
            return
        if session.state is not SessionState.ENDING:
            session.transition(SessionState.ENDING)
        session.transition(SessionState.ENDED)
        handle = session.msrp
        if handle is not None:
            # The handle's on_event refers to the session: dropping the reference back breaks
            # the cycle, so the session is freed by reference counting even once gc.freeze()
            # (gw.node.GcTuner) has put it where the cyclic collector never looks.
            session.msrp = None
            handle.close(reason)
        session.invite = None
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        for call_id in (session.record.call_id, session.call_id):
            if call_id and self.by_call_id.get(call_id) is session:
                del self.by_call_id[call_id]
        with contextlib.suppress(RedisError, OSError):
            await self.store.delete(session.key, owner=self.settings.node_id)
        self.stats.session_ended(reason)
        log.info("session ended: %s", reason, extra={"key": session.key})
        await self._publish(
            ev.SESSION_ENDED, {"key": session.key, "reason": reason, "origin": session.origin}
        )

    async def _refresh_deadline(self, session: GwSession, *, page: bool) -> bool:
        """Push the session's deadline in Redis for one side (`page`: the page-mode side).

        One push at a time per side: messages arriving while one is in flight wait for it
        instead of sending their own, since replies on different pooled connections could
        come back in another order and the messages would go out in another order. Waiters
        resume in arrival order. A store error is raised, to the waiters too; False: Redis
        had lost the record and it could not be rebuilt."""
        touching = session.touching if page else session.touching_msrp
        if touching is not None:
            await asyncio.shield(touching)
            return True
        touching = asyncio.get_running_loop().create_future()
        if page:
            session.touching = touching
        else:
            session.touching_msrp = touching
        now = time.time()
        try:
            await self.store.touch(session.key, page_message=page, now=now)
            if page:
                session.touched_page = now
            else:
                session.touched_msrp = now
        except SessionNotFound:
            # Redis lost it (restart without persistence): we hold the live session.
            return await self._rebuild(session)
        except (RedisError, OSError) as exc:
            touching.set_exception(exc)  # the waiters fail like this one
            touching.exception()  # retrieved: no "never retrieved" log without waiters
            raise
        finally:
            if page:
                session.touching = None
            else:
                session.touching_msrp = None
            if not touching.done():
                touching.set_result(None)
        return True

    async def _rebuild(self, session: GwSession) -> bool:
        """Re-create the record of a live session Redis lost; if another node created the
        key meanwhile, that one wins and ours ends cleanly (BYE)."""
        if session.state.over:
            return False  # ended while we were waiting for Redis: nothing to rebuild
        rec = session.record
        rec.owner = self.settings.node_id
        rec.state = "active" if session.state is SessionState.ACTIVE else "setup"
        if session.dialog is not None:
            d = session.dialog
            rec.call_id, rec.local_tag, rec.remote_tag = d.call_id, d.local_tag, d.remote_tag
        if session.msrp is not None:
            rec.local_path = [str(session.msrp.local_uri)]
            rec.peer_path = [str(u) for u in session.msrp.peer_path]
        rec.created = rec.created or time.time()
        rec.last_message = rec.last_send = time.time()
        if await self.store.create(rec):
            self.stats.sessions_rebuilt += 1
            log.info("session record rebuilt from live state", extra={"key": session.key})
            return True
        await self.end_session(session.key, "superseded")
        return False

    async def reconcile(self) -> None:
        """Rebuild records of live sessions that Redis lost (restart, failover, flush)."""
        keys = [k for k, s in self.sessions.items() if s.state is SessionState.ACTIVE]
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            found = await self.store.existing(batch)
            for key, exists in zip(batch, found, strict=True):
                session = self.sessions.get(key)
                if not exists and session is not None and session.state is SessionState.ACTIVE:
                    await self._rebuild(session)

    async def on_expired(self, key: str) -> None:
        """The session's deadline passed (keyspace notification or sweep)."""
        try:
            rec = await self.store.get(key)
        except (RedisError, OSError):
            return
        if rec is None:
            return
        if self.store.deadline(rec) > time.time() + 0.5:
            return  # touched meanwhile: a new deadline is armed
        if rec.owner != self.settings.node_id and key not in self.sessions:
            # Its owner ends it; when the owner is dead, the first node to see it does.
            alive = self.registry is None or await self.registry.alive(rec.owner)
            if alive:
                return
        with contextlib.suppress(RedisError, OSError):
            await self.end_session(key, "expired")

    async def sweep(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            for key in await self.store.expired_sweep(count=self.scan_count):
                await self.on_expired(key)
            await self.reconcile()

    async def drain(self) -> None:
        """SIGTERM: take no new work, end what we own with BYE."""
        self.draining = True
        for key in list(self.sessions):
            await self.end_session(key, "shutdown")

    async def list_sessions(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        async for rec in self.store.iter_sessions(self.scan_count):
            local = self.sessions.get(rec.key)
            sid = rec.local_path[0].rsplit("/", 1)[-1].split(";")[0] if rec.local_path else ""
            out.append(
                {
                    # The fields of OpenSIPS msrp_gateway's msrp_gw_list_sessions first...
                    "key": rec.key,
                    "msg_side_from": rec.msg_from,
                    "msg_side_to": rec.msg_to,
                    "msg_side_ruri": rec.msg_ruri,
                    "msrp_ua_session_id": sid,
                    # ...then ours.
                    "state": local.state.record_state if local else rec.state,
                    "origin": rec.origin,
                    "owner": rec.owner,
                    "from": rec.msg_from,
                    "to": rec.msg_to,
                    "ruri": rec.msg_ruri,
                    "msrp_session_id": sid,
                    "peer_path": rec.peer_path,
                    "created": rec.created,
                    "last_message": rec.last_message,
                    "last_send": rec.last_send,
                    "queued": local.queued if local else None,
                }
            )
        return out
