"""Setting a session up for `msg_to_msrp`: our INVITE, then the MSRP leg.

INVITING --2xx--> CONNECTING --MSRP leg up, record updated--> ACTIVE, then the queued
messages go. Any failure answers the queued MESSAGEs with a precise code, deletes the
record, *then* publishes E_MSRP_GW_SETUP_FAILED (whoever reacts finds the key free),
and ends the session; `failure_notice`, when set, tells the page-mode user.
"""

from __future__ import annotations

import contextlib

from redis.exceptions import RedisError

from gw.cluster.messages import PageMessage
from gw.gateway import events as ev
from gw.gateway.commands import (
    CloseMsrp,
    Connect,
    Invite,
    Procedure,
    PublishNow,
    SendPage,
    Spawn,
    StoreDelete,
    StoreUpdate,
)
from gw.gateway.context import Context, log
from gw.gateway.legs import Role, peer_path
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.rules import setup_refusal
from gw.gateway.session import GwSession, Outcome, mirror_into
from gw.gateway.state import SessionState
from gw.gateway.to_msrp import PageToMsrp
from gw.ids import new_sid
from gw.logs import Throttle
from gw.msrp.endpoint import MsrpSessionError
from gw.msrp.uri import MsrpUri, MsrpUriError
from gw.sip.message import LocalFailure, Response
from gw.sip.sdp import SdpError, find_msrp_media, parse_sdp, we_connect
from gw.sip.uri import parse_name_addr
from gw.store.records import SessionRecord

__all__ = ["SetupFailed", "Setups"]


class SetupFailed(Exception):
    """A set-up step failed: the status and reason the queued MESSAGEs get."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class Setups:
    def __init__(self, ctx: Context, to_msrp: PageToMsrp, lifecycle: Lifecycle) -> None:
        self.ctx = ctx
        self.to_msrp = to_msrp
        self.lifecycle = lifecycle
        self.pending = 0  # set-ups in progress (max_pending_setups)
        self.creating = 0  # records being created for new keys
        self._refusal_log = Throttle(clock=ctx.clock.perf)  # one line a second, not per MESSAGE

    def at_capacity(self) -> bool:
        """Whether a new set-up would be refused now (`refusal` answers and counts it)."""
        return self.pending + self.creating >= self.ctx.settings.max_pending_setups

    def refusal(self, key: str) -> Outcome | None:
        """Overload: with `max_pending_setups` set-ups in progress, a new one gets a fast 503
        instead of joining a queue where all of them would time out together."""
        ctx = self.ctx
        s = ctx.settings
        in_progress = self.pending + self.creating
        refused = setup_refusal(in_progress, s.max_pending_setups, s.retry_after)
        if refused is None:
            return None
        ctx.stats.setups_refused += 1
        if self._refusal_log.ready() is not None:
            log.warning(
                "refusing new sessions with 503: %d set-ups in progress (%d refused so far)",
                in_progress,
                ctx.stats.setups_refused,
                extra={"key": key},
            )
        return refused

    def new_record(self, page: PageMessage) -> SessionRecord:
        now = self.ctx.clock.time()
        record = SessionRecord(
            key=page.key,
            sid=new_sid(),
            state="setup",
            origin="msg_to_msrp",
            owner=self.ctx.me,
            content_types=list(page.content_types or self.ctx.settings.content_types),
            created=now,
            last_message=now,
            last_send=now,
        )
        mirror_into(page, record)
        return record

    def start(self, page: PageMessage, record: SessionRecord, *, fresh: bool) -> GwSession:
        """Own `record` and set a new MSRP leg up for it (a new key, or one taken over)."""
        ctx = self.ctx
        prior: str | None = None  # the sid of the record taken, to take it only from that one
        if not fresh:
            mirror_into(page, record)
            record.state = "setup"
            record.origin = "msg_to_msrp"
            record.content_types = list(page.content_types or ctx.settings.content_types)
            prior, record.sid = record.sid, new_sid()  # a new instance holds the key now
        session = GwSession(key=page.key, origin="msg_to_msrp", record=record)
        ctx.table.add(session)
        ctx.stats.sessions_created["msg_to_msrp"] += 1
        self.pending += 1
        ctx.out(Spawn(self.run(session, page, prior)))
        return session

    def run(self, session: GwSession, page: PageMessage, prior: str | None) -> Procedure[None]:
        try:
            yield from self.set_up(session, page, prior)
        finally:
            self.pending -= 1
            self.to_msrp.release(session)  # outcomes of its first SEND, held until now

    def set_up(self, session: GwSession, page: PageMessage, prior: str | None) -> Procedure[None]:
        """INVITE, then the MSRP leg; `prior`: the sid of the record this set-up took over
        (None: the record is new)."""
        ctx = self.ctx
        s = ctx.settings
        local_uri = ctx.legs.new_local_uri()
        setup = None if s.msrp_setup == "none" else s.msrp_setup
        try:  # through the relay, if one is configured (RFC 4976): its Use-Path, then us
            offer = ctx.legs.offer(local_uri, session.record.content_types, setup)
        except MsrpSessionError as exc:
            yield from self.failed(session, exc.code, "MSRP Relay Unavailable", None, None)
            return
        hop = ctx.onward(session.record)
        invite = ctx.sip.new_request(
            "INVITE",
            page.ruri,
            from_=page.page_from,
            to=page.page_to,
            body=offer,
            content_type="application/sdp",
            headers=[("Contact", f"<{ctx.sip.contact()}>"), *hop.headers],
            max_forwards=hop.max_forwards,
        )
        session.invite = invite
        session.call_id = invite.call_id
        ctx.table.index(session, invite.call_id)
        code: int | None = None
        reason: str | None = None
        try:
            if prior is not None:
                rec = session.record
                yield StoreUpdate(
                    session.key,
                    {
                        "sid": rec.sid,
                        "state": "setup",
                        "origin": "msg_to_msrp",
                        "msg_from": rec.msg_from,
                        "msg_to": rec.msg_to,
                        "msg_ruri": rec.msg_ruri,
                        "content_types": rec.content_types,
                    },
                    None,
                    prior,
                )
            response, dialog = yield Invite(invite, s.setup_timeout)
            if response.local is None and response.status >= 300:
                # The event reports a negative reply only; after a 2xx (MSRP leg failed) or
                # with no reply at all its code and reason are null (reference semantics).
                code, reason = response.status, response.reason
            if dialog is None:
                status = response.status if response.status >= 300 else 500
                if response.local is LocalFailure.TIMEOUT or status == 487:
                    status = 408
                raise SetupFailed(status, response.reason if code else "No Answer From MSRP Side")
            session.dialog = dialog
            session.invite = None  # only a CANCEL needed it: the dialog has what BYE needs
            if session.state is not SessionState.INVITING:  # ended meanwhile (MI, drain)
                self.lifecycle.hang_up(session)
                return
            session.transition(SessionState.CONNECTING)
            yield from self.connect(session, response, local_uri, setup)
        except SetupFailed as exc:
            yield from self.failed(session, exc.status, exc.reason, code, reason)
            return
        except (RedisError, OSError) as exc:
            yield from self.failed(session, 503, f"Store Error: {exc}", None, None)
            return
        if session.state.over:  # ended while connecting
            self.lifecycle.hang_up(session)
            handle = session.msrp
            if handle is not None:
                session.msrp = None
                ctx.out(CloseMsrp(handle, "session ended"))
            return
        session.transition(SessionState.ACTIVE)
        log.info(
            "session started",
            extra={"key": session.key, "origin": "msg_to_msrp", "call_id": invite.call_id},
        )
        self.to_msrp.flush(session)

    def connect(
        self, session: GwSession, response: Response, local_uri: MsrpUri, our_setup: str | None
    ) -> Procedure[None]:
        """The MSRP leg the 2xx describes: open it, then record it in the store."""
        ctx = self.ctx
        try:
            media = find_msrp_media(parse_sdp(response.body))
        except SdpError:
            media = None
        if media is None:
            self.lifecycle.hang_up(session)
            raise SetupFailed(488, "No MSRP Stream In Answer")
        try:
            path = peer_path(media)
        except MsrpUriError as exc:
            log.info("bad a=path in the answer: %s", exc, extra={"key": session.key})
            self.lifecycle.hang_up(session)
            raise SetupFailed(488, "Bad MSRP Path In Answer") from None
        try:
            active = we_connect(we_offered=True, offer=our_setup, answer=media.setup)
        except SdpError:
            self.lifecycle.hang_up(session)
            raise SetupFailed(488, "Incompatible a=setup") from None
        session.peer_types = ctx.table.types(media.accept_types)
        role: Role = "active" if active else "passive"
        try:
            handle = ctx.legs.open(
                session,
                media,
                path=path,
                local_uri=local_uri,
                role=role,
                types=session.record.content_types,
            )
        except MsrpSessionError as exc:  # the relay went down during the INVITE
            self.lifecycle.hang_up(session)
            raise SetupFailed(exc.code, "MSRP Relay Unavailable") from exc
        session.msrp = handle
        # Active, we open the connection: the queued message is its first SEND (no empty
        # SEND and 200 first); while the store records the session, it is on its way.
        handed = self.to_msrp.flush(session, binding=True) if active else []
        try:
            yield Connect(handle, ctx.settings.setup_timeout)
        except (MsrpSessionError, TimeoutError, OSError) as exc:
            self.to_msrp.recall(session, handed)  # answered as the set-up's failure
            session.msrp = None
            handle.close("connect failed")
            self.lifecycle.hang_up(session)
            raise SetupFailed(480, "MSRP Connection Failed") from exc
        d = session.dialog
        assert d is not None
        # The record turns active and SESSION_STARTED goes out in one store round trip.
        started = (ev.SESSION_STARTED, {"key": session.key, "origin": "msg_to_msrp"})
        try:
            yield StoreUpdate(
                session.key,
                {
                    "state": "active",
                    "call_id": d.call_id,
                    "local_tag": d.local_tag,
                    "remote_tag": d.remote_tag,
                    "local_path": [str(local_uri)],
                    "peer_path": list(media.path),
                },
                started,
                session.record.sid,
            )
        except BaseException:
            self.to_msrp.recall(session, handed)  # not delivered yet: the failure answers
            raise
        if handle.closed:  # lost while we were recording it (its SessionClosed came early)
            # Rare (a window of one round trip): SESSION_STARTED is out, SETUP_FAILED follows.
            self.to_msrp.recall(session, handed)
            self.lifecycle.hang_up(session)
            raise SetupFailed(480, "MSRP Connection Failed")

    def failed(
        self,
        session: GwSession,
        status: int,
        reason: str,
        code: int | None,
        sip_reason: str | None,
    ) -> Procedure[None]:
        ctx = self.ctx
        ctx.stats.setup_failed[status] += 1
        log.info("session setup failed: %d %s", status, reason, extra={"key": session.key})
        rec = session.record
        self.to_msrp.fail_queue(session, Outcome(status, reason))  # answered before the store
        # The record goes before the event does: whoever reacts to it finds the key free.
        with contextlib.suppress(RedisError, OSError):
            yield StoreDelete(session.key, ctx.me, rec.sid)
        yield PublishNow(
            ev.SETUP_FAILED,
            {
                "key": session.key,
                "from_uri": rec.msg_from,
                "to_uri": rec.msg_to,
                "ruri": rec.msg_ruri,
                "code": code,
                "reason": sip_reason,
            },
        )
        yield from self.lifecycle.forget(session, "setup failed")
        if ctx.settings.failure_notice:
            self.failure_notice(rec, status, reason)

    def failure_notice(self, rec: SessionRecord, status: int, reason: str) -> None:
        """Tell the page-mode user the set-up failed (config `failure_notice`)."""
        ctx = self.ctx
        text = ctx.settings.failure_notice.format(code=status, reason=reason, key=rec.key)
        hop = ctx.onward(rec)
        req = ctx.sip.new_request(
            "MESSAGE",
            rec.msg_ruri,
            from_=parse_name_addr(f"<{rec.msg_from}>"),
            to=parse_name_addr(f"<{rec.msg_to}>"),
            body=text.encode(),
            content_type="text/plain",
            headers=hop.headers,
            max_forwards=hop.max_forwards,
        )
        ctx.out(SendPage(None, req))
