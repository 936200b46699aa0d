"""`msrp_gw_answer`: answering an INVITE with an MSRP stream, and the dialog's later
requests (re-INVITE, BYE, the rest)."""

from __future__ import annotations

import contextlib

from redis.exceptions import RedisError

from gw.gateway import events as ev
from gw.gateway.commands import (
    CloseMsrp,
    Connect,
    DialogOf,
    Procedure,
    PublishNow,
    Respond,
    ServerTxn,
    Sleep,
    Spawn,
    StoreCreate,
    StoreDelete,
    StoreUpdate,
)
from gw.gateway.context import Context, log
from gw.gateway.legs import Role, peer_path
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.loops import hops_of
from gw.gateway.policy import Decision
from gw.gateway.session import GwSession, busy
from gw.gateway.settings import ALLOW
from gw.gateway.state import SessionState
from gw.ids import new_sid
from gw.msrp.endpoint import MsrpSessionError
from gw.msrp.uri import MsrpUriError
from gw.sip.sdp import SdpError, answer_setup, find_msrp_media, negotiate_types, parse_sdp
from gw.store.records import SessionRecord

__all__ = ["Answering", "Unbound"]

StoreErrors = (RedisError, OSError)


class Unbound:
    """Answered sessions whose MSRP leg no connection carries yet, by the source address of
    their INVITE. INVITEs need no authentication: without a bound, one source could hold
    any number of sessions that never connect (each with its record, for hours). Beyond
    `max_unbound_per_source` a new INVITE from that source gets 503; a leg still unbound
    after `bind_timeout` ends its session."""

    def __init__(self) -> None:
        self.by_source: dict[str, int] = {}

    def full(self, source: str, limit: int) -> bool:
        return self.by_source.get(source, 0) >= limit

    def add(self, session: GwSession, source: str) -> None:
        session.unbound_from = source
        self.by_source[source] = self.by_source.get(source, 0) + 1

    def done(self, session: GwSession) -> None:
        """Bound, or ended: no longer counted (idempotent)."""
        source, session.unbound_from = session.unbound_from, None
        if source is None:
            return
        left = self.by_source.get(source, 0) - 1
        if left > 0:
            self.by_source[source] = left
        else:
            self.by_source.pop(source, None)


class Answering:
    def __init__(self, ctx: Context, lifecycle: Lifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self.unbound = Unbound()
        lifecycle.on_release.append(self.unbound.done)

    def invite(self, txn: ServerTxn, decision: Decision) -> Procedure[None]:
        """An out-of-dialog INVITE the policy answers: validate the whole offer, replace the
        key's session, record the new one, answer 200 with our SDP."""
        ctx = self.ctx
        request = txn.request
        if ctx.draining:
            ctx.unavailable(txn, "draining")
            return
        if ctx.destination_refused(decision.ruri, decision.key):  # where MESSAGEs would go
            ctx.reject(txn, 403, "Destination Not Allowed", "gateway.allowed_destinations")
            return
        via = request.top_via
        source = via.params.get("received") or via.host
        if self.unbound.full(source, ctx.settings.max_unbound_per_source):
            ctx.stats.unbound_refused += 1
            o = busy("Too Many Session Setups", ctx.settings.retry_after)
            ctx.reject(txn, o.status, o.reason, f"{source}: unbound sessions at the cap", o.headers)
            return
        try:
            offer = parse_sdp(request.body)
            media = find_msrp_media(offer)
        except SdpError as exc:
            ctx.reject(txn, 400, "Bad SDP", str(exc))
            return
        if media is None:
            ctx.reject(
                txn,
                488,
                "No MSRP Stream",
                "sdp",
                [("Warning", '304 msrp-gw "Media type not available"')],
            )
            return
        try:
            path = peer_path(media)
        except MsrpUriError as exc:
            ctx.reject(txn, 400, "Bad MSRP Path", str(exc))
            return
        types = negotiate_types(
            media.accept_types, decision.content_types or ctx.settings.content_types
        )
        if not types:
            ctx.reject(
                txn,
                488,
                "No Acceptable Content Type",
                "sdp",
                [("Warning", '305 msrp-gw "Incompatible media format"')],
            )
            return
        # The key's session is replaced: given up at once, its BYE goes on meanwhile.
        old = ctx.table.get(decision.key)
        if old is not None:
            yield from self.lifecycle.end(old, "replaced", wait_bye=False)
        setup = answer_setup(media.setup) if media.setup else None
        role: Role = "active" if setup == "active" else "passive"
        local_uri = ctx.legs.new_local_uri()
        now = ctx.clock.time()
        hops = hops_of(request)
        record = SessionRecord(
            key=decision.key,
            sid=new_sid(),
            state="active",
            origin="answer",
            owner=ctx.me,
            msg_from=decision.from_uri,
            msg_to=decision.to_uri,
            msg_ruri=decision.ruri,
            call_id=request.call_id,
            remote_tag=request.from_.tag or "",
            local_path=[str(local_uri)],
            peer_path=list(media.path),
            content_types=types,
            created=now,
            last_message=now,
            last_send=now,
            marks=list(hops.marks),
            max_forwards=hops.max_forwards,
        )
        try:
            if not (yield StoreCreate(record)):
                # Another instance holds the key (another node's, or one being set up
                # here meanwhile): its owner ends it, then the key is ours.
                yield from self.lifecycle.end_session(decision.key, "replaced", wait_bye=False)
                if not (yield StoreCreate(record)):
                    yield StoreDelete(decision.key)
                    if not (yield StoreCreate(record)):
                        ctx.unavailable(txn, "session create race")
                        return
        except StoreErrors as exc:
            log.warning("store unavailable: %s", exc)
            ctx.unavailable(txn, "store")
            return
        occupant = ctx.table.get(decision.key)  # set up here while we wrote the record
        if occupant is not None and not occupant.state.over:
            yield from self.lifecycle.end(occupant, "replaced", wait_bye=False)
        session = GwSession(
            key=decision.key,
            origin="answer",
            record=record,
            state=SessionState.ACTIVE,
            call_id=request.call_id,
            peer_types=ctx.table.types(media.accept_types),
        )
        try:
            handle = ctx.legs.open(
                session, media, path=path, local_uri=local_uri, role=role, types=types
            )
        except MsrpSessionError as exc:  # relay configured but down
            with contextlib.suppress(*StoreErrors):
                yield StoreDelete(decision.key, ctx.me, record.sid)
            ctx.unavailable(txn, f"msrp relay: {exc}")
            return
        session.msrp = handle
        ctx.table.add(session)
        self.unbound.add(session, source)
        ctx.out(Spawn(self.await_bind(session)))
        ctx.stats.sessions_created["answer"] += 1
        answer = ctx.legs.answer(media, handle, types=types, setup=setup, offer=offer)
        ctx.out(Respond(txn, 200, "OK", body=answer, content_type="application/sdp"))
        session.dialog = yield DialogOf(txn)
        log.info(
            "session started",
            extra={"key": session.key, "origin": "answer", "call_id": request.call_id},
        )
        started = (ev.SESSION_STARTED, {"key": session.key, "origin": "answer"})
        if session.dialog is not None:  # the tag and the event in one round trip
            tag = {"local_tag": session.dialog.local_tag}
            yield StoreUpdate(decision.key, tag, started, record.sid)
        else:
            yield PublishNow(*started)
        if role == "active":
            ctx.out(Spawn(self.connect(session)))

    def bound(self, session: GwSession) -> None:
        """A connection carries the session's MSRP leg now (SessionBound)."""
        self.unbound.done(session)

    def await_bind(self, session: GwSession) -> Procedure[None]:
        """End the session if no connection carries its leg within `bind_timeout` (the
        peer never connected, or never sent its first SEND on the connection)."""
        yield Sleep(self.ctx.settings.bind_timeout)
        if session.unbound_from is not None and not session.state.over:
            log.info("msrp leg never bound: ending", extra={"key": session.key})
            yield from self.lifecycle.end(session, "msrp not connected")

    def connect(self, session: GwSession) -> Procedure[None]:
        """We are the active side (the offer said a=setup:passive): open the leg."""
        handle = session.msrp
        if handle is None:
            return  # ended meanwhile
        try:
            yield Connect(handle, self.ctx.settings.setup_timeout)
        except (MsrpSessionError, TimeoutError, OSError) as exc:
            log.info("cannot connect to MSRP peer: %s", exc, extra={"key": session.key})
            yield from self.lifecycle.end(session, "msrp connect failed")

    def in_dialog(self, txn: ServerTxn) -> Procedure[None]:
        """A request inside a dialog (or with a To tag): BYE ends the session, a re-INVITE
        updates its MSRP leg, the rest is answered as a UA does."""
        ctx = self.ctx
        request = txn.request
        session = ctx.table.by_call_id(request.call_id)
        if request.method == "BYE":
            ctx.out(Respond(txn, 200, "OK"))
            if session is not None:
                yield from self.lifecycle.end(session, "bye", send_bye=False)
            return
        if request.method == "INVITE" and session is not None:
            yield from self.reinvite(txn, session)
            return
        status = 200 if request.method == "OPTIONS" else 405
        ctx.out(
            Respond(
                txn, status, "OK" if status == 200 else "Method Not Allowed", [("Allow", ALLOW)]
            )
        )

    def reinvite(self, txn: ServerTxn, session: GwSession) -> Procedure[None]:
        """A new offer: update the peer path and types (the MSRP session is re-created
        when the path changed)."""
        ctx = self.ctx
        request = txn.request
        try:
            offer = parse_sdp(request.body) if request.body else None
            media = find_msrp_media(offer) if offer is not None else None
            path = peer_path(media) if media is not None else ()
        except (SdpError, MsrpUriError):
            offer = media = None
            path = ()
        if media is None or session.msrp is None:
            ctx.out(Respond(txn, 488, "Not Acceptable Here"))
            return
        types = negotiate_types(media.accept_types, session.record.content_types)
        if not types:
            ctx.out(Respond(txn, 488, "No Acceptable Content Type"))
            return
        old = session.msrp
        setup = answer_setup(media.setup) if media.setup else None
        role: Role = "active" if setup == "active" else "passive"
        local_uri = old.local_uri
        if [str(u) for u in old.peer_path] != list(media.path):
            try:
                new = ctx.legs.open(
                    session,
                    media,
                    path=path,
                    local_uri=ctx.legs.new_local_uri(),
                    role=role,
                    types=types,
                )
            except MsrpSessionError:  # relay configured but down
                ctx.unavailable(txn, "msrp relay down")
                return
            session.msrp = new
            # Closed after the swap: its SessionClosed must not end the session.
            ctx.out(CloseMsrp(old, "re-INVITE"))
            local_uri = new.local_uri
        session.peer_types = ctx.table.types(media.accept_types)
        answer = ctx.legs.answer(media, session.msrp, types=types, setup=setup, offer=offer)
        ctx.out(Respond(txn, 200, "OK", body=answer, content_type="application/sdp"))
        with contextlib.suppress(*StoreErrors):
            paths = {"peer_path": list(media.path), "local_path": [str(local_uri)]}
            yield StoreUpdate(session.key, paths, None, session.record.sid)
        if role == "active" and session.msrp is not old:
            ctx.out(Spawn(self.connect(session)))
