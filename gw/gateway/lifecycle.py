"""How sessions end, expire, and survive a store that lost them.

Procedures (see gw.gateway.commands): `end_session` (by key: MI, expiry, another node)
and `end` (this session: BYE, drain, a lost MSRP leg, replaced, superseded), `refresh`
(push a deadline; rebuild a record the store lost), `expired`, `sweep`, `reconcile`.
`forget` is the one place a session leaves this node.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from redis.exceptions import RedisError

from gw.cluster.messages import BadRpc, Ended, EndSession
from gw.cluster.rpc import NodeUnreachable
from gw.gateway import events as ev
from gw.gateway.commands import (
    Alive,
    Ask,
    Bye,
    Cancel,
    CloseMsrp,
    Procedure,
    PublishNow,
    Spawn,
    StoreCreate,
    StoreDelete,
    StoreGet,
    StoreSids,
    StoreSweep,
    StoreTouch,
)
from gw.gateway.context import Context, log
from gw.gateway.session import GwSession, Outcome
from gw.gateway.state import SessionState
from gw.gateway.to_msrp import PageToMsrp
from gw.sip.dialog import Dialog
from gw.store.records import SessionRecord
from gw.store.sessions import SessionNotFound

__all__ = ["Lifecycle"]

StoreErrors = (RedisError, OSError)


class Lifecycle:
    def __init__(self, ctx: Context, to_msrp: PageToMsrp) -> None:
        self.ctx = ctx
        self.to_msrp = to_msrp
        self.scan_count = 1000
        # When a record's deadline passes: the store's rule (SessionStore.deadline).
        self.deadline_of: Callable[[SessionRecord], float] = lambda rec: rec.last_message
        # Called with each session as it leaves this node (`release`): bookkeeping by others.
        self.on_release: list[Callable[[GwSession], None]] = []

    def end_session(
        self, key: str, reason: str, *, send_bye: bool = True, wait_bye: bool = True
    ) -> Procedure[bool]:
        """End the key's session: ours here, a live owner's through it, a dead owner's
        record directly. True when a session was ended."""
        ctx = self.ctx
        session = ctx.table.get(key)
        if session is not None:
            return (yield from self.end(session, reason, send_bye=send_bye, wait_bye=wait_bye))
        rec: SessionRecord | None = yield StoreGet(key)  # an error: "unavailable", not 404
        if rec is None:
            return False
        if (yield from self.owner_elsewhere(rec.owner)):
            # The owner holds the dialog and the MSRP connection: it sends the BYE.
            try:
                reply = yield Ask(rec.owner, EndSession(key, reason), self.forward_timeout)
            except (NodeUnreachable, TimeoutError, BadRpc):
                pass
            else:
                return isinstance(reply, Ended) and reply.ok
        # Owner dead (or we own a record without live state): clean up that record, and
        # only that one (a new session may have taken the key since the read).
        if not (yield StoreDelete(key, rec.owner, rec.sid)):
            return False
        log.info("session ended: %s (owner %s gone)", reason, rec.owner, extra={"key": key})
        yield PublishNow(
            ev.SESSION_ENDED,
            {"key": key, "reason": reason, "origin": rec.origin, "owner": rec.owner},
        )
        return True

    def end(
        self, session: GwSession, reason: str, *, send_bye: bool = True, wait_bye: bool = True
    ) -> Procedure[bool]:
        """End `session` (this instance, whatever holds its key now). The key is given up,
        here and in the store, before the BYE goes out: a session that replaces it never
        waits for the old dialog's BYE (up to 64*T1 to a peer gone silent), and nothing
        the old one does later can touch the new one. `wait_bye`: the procedure returns
        once the BYE is answered (drain, MI); else the BYE goes on in the background."""
        if session.state.over:
            return True
        was_setup = session.state.setting_up
        session.transition(SessionState.ENDING)
        self.to_msrp.fail_queue(session, Outcome(480, "Session Ended"))
        dialog, session.dialog = session.dialog, None
        invite = session.invite if was_setup and dialog is None else None
        yield from self.forget(session, reason)
        if invite is not None:
            yield Cancel(invite)
        if send_bye and dialog is not None:
            if wait_bye:
                yield Bye(dialog)
            else:
                self._bye_later(dialog)
        return True

    @property
    def forward_timeout(self) -> float:
        s = self.ctx.settings
        return max(s.forward_timeout, s.delivery_timeout + 1.0)

    def owner_elsewhere(self, owner: str) -> Procedure[bool]:
        """True when another live node owns it (so it must do the work)."""
        if owner == self.ctx.me or not self.ctx.clustered:
            return False
        alive: bool = yield Alive(owner)
        return alive

    def hang_up(self, session: GwSession) -> None:
        """BYE to the session's dialog, in the background: whatever follows (a failed
        set-up's answer, the record's delete) does not wait for a silent peer."""
        dialog, session.dialog = session.dialog, None
        if dialog is not None:
            self._bye_later(dialog)

    def _bye_later(self, dialog: Dialog) -> None:
        def bye() -> Procedure[None]:
            yield Bye(dialog)

        self.ctx.out(Spawn(bye()))

    def forget(self, session: GwSession, reason: str) -> Procedure[None]:
        """Drop the session from this node and the store, once (a set-up ended by MI and
        then failing would otherwise be counted and announced twice)."""
        if session.state is SessionState.ENDED:
            return
        self.release(session, reason)
        ctx = self.ctx
        with contextlib.suppress(*StoreErrors):
            yield StoreDelete(session.key, ctx.me, session.record.sid)
        ctx.stats.session_ended(reason)
        log.info("session ended: %s", reason, extra={"key": session.key})
        yield PublishNow(
            ev.SESSION_ENDED, {"key": session.key, "reason": reason, "origin": session.origin}
        )

    def release(self, session: GwSession, reason: str) -> None:
        """The local half of `forget`: ENDED, the MSRP leg closed, out of the table."""
        if session.state is not SessionState.ENDING:
            session.transition(SessionState.ENDING)
        session.transition(SessionState.ENDED)
        handle = session.msrp
        if handle is not None:
            # The handle's on_event refers to the session: dropping the reference back breaks
            # the cycle, so the session is freed by reference counting even once gc.freeze()
            # (gw.node.GcTuner) has put it where the cyclic collector never looks.
            session.msrp = None
            self.ctx.out(CloseMsrp(handle, reason))
        session.invite = None
        self.ctx.table.remove(session)
        for hook in self.on_release:
            hook(session)

    def refresh(self, session: GwSession, *, page: bool) -> Procedure[bool]:
        """Push the session's deadline in the store for one side (`page`: page-mode side).
        A store error is raised; False: the store had lost the record and it could not be
        rebuilt. The adapter runs one at a time per session and side (`Refresh`)."""
        now = self.ctx.clock.time()
        try:
            yield StoreTouch(session.key, page, now, session.record.sid)
        except SessionNotFound:
            # The store lost it (restart without persistence): we hold the live session.
            return (yield from self.rebuild(session))
        if page:
            session.touched_page = now
        else:
            session.touched_msrp = now
        return True

    def rebuild(self, session: GwSession) -> Procedure[bool]:
        """Re-create the record of a live session the store lost; if another node created
        the key meanwhile, that one wins and ours ends cleanly (BYE)."""
        if session.state.over:
            return False  # ended while we were waiting for the store: nothing to rebuild
        ctx = self.ctx
        rec = session.record
        rec.owner = ctx.me
        rec.state = "active" if session.state is SessionState.ACTIVE else "setup"
        if session.dialog is not None:
            d = session.dialog
            rec.call_id, rec.local_tag, rec.remote_tag = d.call_id, d.local_tag, d.remote_tag
        if session.msrp is not None:
            rec.local_path = [str(session.msrp.local_uri)]
            rec.peer_path = [str(u) for u in session.msrp.peer_path]
        now = ctx.clock.time()
        rec.created = rec.created or now
        rec.last_message = rec.last_send = now
        if (yield StoreCreate(rec)):
            ctx.stats.sessions_rebuilt += 1
            log.info("session record rebuilt from live state", extra={"key": session.key})
            return True
        # Another instance holds the key: a session without its record is ended (BYE).
        log.info("session superseded: its key holds another session", extra={"key": session.key})
        yield from self.end(session, "superseded")
        return False

    def reconcile(self) -> Procedure[None]:
        """Our live sessions against the store: a lost record is rebuilt (restart, failover,
        flush); a session whose key another instance holds now is ended."""
        table = self.ctx.table
        sessions = [s for s in table.sessions() if s.state is SessionState.ACTIVE]
        for start in range(0, len(sessions), 500):
            batch = sessions[start : start + 500]
            found: list[str | None] = yield StoreSids([s.key for s in batch])
            for session, sid in zip(batch, found, strict=True):
                if session.state is not SessionState.ACTIVE:
                    continue  # ended meanwhile
                if sid is None:
                    yield from self.rebuild(session)
                elif sid != session.record.sid:
                    log.info(
                        "session superseded: its key holds another session",
                        extra={"key": session.key},
                    )
                    yield from self.end(session, "superseded")

    def expired(self, key: str) -> Procedure[None]:
        """The session's deadline passed (keyspace notification or sweep)."""
        ctx = self.ctx
        try:
            rec: SessionRecord | None = yield StoreGet(key)
        except StoreErrors:
            return
        if rec is None:
            return
        if self.deadline_of(rec) > ctx.clock.time() + 0.5:
            return  # touched meanwhile: a new deadline is armed
        # Its owner ends it; when the owner is dead, the first node to see it does.
        elsewhere = rec.owner != ctx.me and ctx.table.get(key) is None and ctx.clustered
        if elsewhere and (yield Alive(rec.owner)):
            return
        with contextlib.suppress(*StoreErrors):
            yield from self.end_session(key, "expired")

    def sweep(self) -> Procedure[None]:
        """cleanup_interval: the sessions whose expiry event was missed, and lost records."""
        try:
            for key in (yield StoreSweep(self.scan_count)):
                yield from self.expired(key)
            yield from self.reconcile()
        except StoreErrors:
            pass

    def drain(self) -> Procedure[None]:
        """SIGTERM: take no new work, end what we own with BYE."""
        self.ctx.draining = True
        for session in self.ctx.table.sessions():
            yield from self.end(session, "shutdown")
