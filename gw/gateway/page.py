"""Page mode to session mode: `msg_to_msrp`, owner routing and takeover, MSRP leg setup."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable
from typing import Any

from redis.exceptions import RedisError

from gw.cluster.messages import (
    Answer,
    BadRpc,
    Ended,
    EndSession,
    PageMessage,
    RpcReply,
    RpcRequest,
)
from gw.cluster.rpc import NodeUnreachable
from gw.gateway import events as ev
from gw.gateway.answer import SessionSide
from gw.gateway.base import TOUCH_INTERVAL, log
from gw.gateway.loops import hops_of
from gw.gateway.policy import Decision
from gw.gateway.rules import admit, screen_page_message, setup_refusal
from gw.gateway.session import (
    GwSession,
    Outcome,
    Pending,
    busy,
    mirror_into,
    retry_after_header,
)
from gw.gateway.state import SessionState
from gw.msrp.endpoint import MsrpSessionError
from gw.sip.endpoint import IncomingRequest
from gw.sip.message import LocalFailure, Request, Response
from gw.sip.sdp import (
    SdpError,
    find_msrp_media,
    parse_sdp,
    we_connect,
)
from gw.sip.uri import NameAddr, parse_name_addr
from gw.store.records import SessionRecord


class PageSide(SessionSide):
    def msg_to_msrp(self, incoming: IncomingRequest, decision: Decision) -> Awaitable[None] | None:
        """An out-of-dialog MESSAGE. On the key's local, established session it is queued
        for the MSRP side at once and answered from its outcome's callback (no task per
        message); otherwise this returns the coroutine of the slow path (forwarding to the
        owner, taking over, setting a session up), which the SIP endpoint runs as a task."""
        request = incoming.request
        ctype = request.content_type
        types = decision.content_types or self.settings.content_types
        refusal = screen_page_message(
            ctype,
            request.body,
            types,
            draining=self.draining,
            retry_after=self.settings.retry_after,
        )
        if refusal is not None or not ctype:
            if refusal is not None:
                self._refuse(incoming, refusal)
            return None
        started = time.perf_counter()
        session = self._ready_session(decision.key)
        if session is not None:
            result = self._submit(session, request.body, ctype, request.call_id)
            if isinstance(result, Outcome):
                self._reply_page(incoming, started, result)
            else:
                result.add_done_callback(functools.partial(self._page_done, incoming, started))
            return None
        page = PageMessage(
            key=decision.key,
            body=request.body,
            content_type=ctype,
            call_id=request.call_id,
            page_from=str(NameAddr(uri=request.from_.uri, display=request.from_.display)),
            page_to=str(NameAddr(uri=request.to.uri, display=request.to.display)),
            ruri=decision.ruri or str(request.uri),
            content_types=list(types),
        )
        hops = hops_of(request)
        page.marks, page.max_forwards = list(hops.marks), hops.max_forwards
        return self._route_and_reply(incoming, started, page)

    async def _route_and_reply(
        self, incoming: IncomingRequest, started: float, page: PageMessage
    ) -> None:
        self._reply_page(incoming, started, await self.route_page(page))

    def _page_done(
        self, incoming: IncomingRequest, started: float, done: asyncio.Future[Outcome]
    ) -> None:
        if done.cancelled():
            return
        try:
            self._reply_page(incoming, started, done.result())
        except Exception:
            log.exception("cannot answer MESSAGE")

    def _reply_page(self, incoming: IncomingRequest, started: float, outcome: Outcome) -> None:
        if self.on_latency is not None:
            self.on_latency("page_to_msrp", time.perf_counter() - started)
        if outcome.status == 503 and not any(h == "Retry-After" for h, _ in outcome.headers):
            outcome.headers.append(retry_after_header(self.settings.retry_after))
        self._answer(incoming, outcome)

    def _ready_session(self, key: str) -> GwSession | None:
        """The key's local session when a message can go to it without any await: not
        being created, not ending, and its deadline refreshed within TOUCH_INTERVAL."""
        if key in self._creating:
            return None
        session = self.sessions.get(key)
        if (
            session is None
            or session.state.over
            or time.time() - session.touched_page >= TOUCH_INTERVAL
        ):
            return None
        return session

    async def route_page(self, page: PageMessage) -> Outcome:
        """Deliver on the local session, forward to the owner, or take the key over."""
        try:
            return await self._route_page(page)
        except (RedisError, OSError) as exc:
            log.warning("store unavailable: %s", exc, extra={"key": page.key})
            self.stats.store_errors += 1
            return busy("Service Unavailable", self.settings.retry_after)

    async def _route_page(self, page: PageMessage) -> Outcome:
        key = page.key
        creating = self._creating.get(key)
        if creating is not None:
            await asyncio.shield(creating)
        session = self.sessions.get(key)
        if session is not None and not session.state.over:
            # Deadlines are hours away: one touch a second per session is exact enough
            # and keeps Redis off the path of most MESSAGEs in a busy conversation.
            if time.time() - session.touched_page >= TOUCH_INTERVAL:
                session = await self._refresh(session)
            if session is not None:
                return await self._deliver_local(session, page)
        # Slower path, one at a time per key on this node: a concurrent MESSAGE or a forwarded
        # one must find the session this path creates, never start a second leg.
        async with self._key_locks.hold(key):
            found = await self._own_or_route(page)
        if isinstance(found, Outcome):
            return found
        return await self._deliver_local(found, page)

    async def _refresh(self, session: GwSession) -> GwSession | None:
        """Push the session's deadline in Redis (`_refresh_deadline`: a store error fails
        the MESSAGE with 503); the session to deliver on, or None."""
        if not await self._refresh_deadline(session, page=True):
            return None
        if self.sessions.get(session.key) is not session or session.state.over:
            return None
        return session

    async def _own_or_route(self, page: PageMessage) -> GwSession | Outcome:
        """Find or make the owned session for the key, or forward to its live owner. Called
        under the key's lock; never re-enters `_route_page` (the lock is not reentrant)."""
        me, key = self.settings.node_id, page.key
        for attempt in range(3):
            if attempt:
                await asyncio.sleep(0.05)
            session = self.sessions.get(key)
            if session is not None and not session.state.over:
                return session  # made by the MESSAGE we waited for
            rec = await self.store.get(key)
            if rec is None:
                if (refused := self._refuse_setup(key)) is not None:
                    return refused
                session = await self._create_outbound(page)
                if session is not None:
                    return session
                continue  # another node created it first: forward to it
            if rec.owner == me:
                if (refused := self._refuse_setup(key)) is not None:
                    return refused
                return self._start_outbound(page, rec)  # ours in Redis, not in this process
            if self.registry is not None and await self.registry.alive(rec.owner):
                if page.hops >= 2:
                    return Outcome(503, "Session Owner Changing")
                outcome = await self._forward(rec.owner, page)
                if outcome is not None:
                    return outcome
                continue  # its inbox is gone: it is dying; look again
            if (refused := self._refuse_setup(key)) is not None:
                return refused
            claimed = await self.store.claim(key, expected_owner=rec.owner, new_owner=me)
            if claimed is None:
                continue  # another node took it first: it is the owner now
            session = self._start_outbound(page, claimed)  # before any await: forwards find it
            log.info("session taken over from %s", rec.owner, extra={"key": key})
            self.stats.sessions_taken_over += 1
            await self._publish(
                ev.SESSION_MOVED,
                {"key": key, "from_node": rec.owner, "to_node": me, "reason": "owner dead"},
            )
            return session
        return busy("Session Owner Unreachable", 1)

    def _refuse_setup(self, key: str) -> Outcome | None:
        """Overload: with `max_pending_setups` set-ups in progress, a new one gets a fast 503
        instead of joining a queue where all of them would time out together."""
        s = self.settings
        refused = setup_refusal(
            self.setups_pending + len(self._creating), s.max_pending_setups, s.retry_after
        )
        if refused is None:
            return None
        self.stats.setups_refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:  # one line a second, not one per MESSAGE
            self._refusal_logged = now
            log.warning(
                "refusing new sessions with 503: %d set-ups in progress (%d refused so far)",
                self.setups_pending,
                self.stats.setups_refused,
                extra={"key": key},
            )
        return refused

    async def _deliver_local(self, session: GwSession, page: PageMessage) -> Outcome:
        result = self._submit(session, page.body, page.content_type, page.call_id)
        if isinstance(result, Outcome):
            return result
        return await result

    def _submit(
        self, session: GwSession, body: bytes, content_type: str, call_id: str
    ) -> Outcome | asyncio.Future[Outcome]:
        """Queue a page-mode message on the session (and send it when the session is up).

        Returns the answer when it is known at once (415, 503, 202 in accept mode), else
        the future of its outcome: the MSRP side's (`_msrp_outcome`), or 408 once
        `delivery_timeout` passes (a loop timer, no task)."""
        s = self.settings
        refused = admit(
            session.state,
            session.peer_types,
            content_type,
            len(body),
            queued=session.queued,
            queued_bytes=session.queued_bytes,
            limits=self.limits,
        )
        if refused is not None:
            if refused.status == 415:
                self.stats.rejected[415] += 1
            else:
                self.stats.queue_full += 1
            return refused
        loop = asyncio.get_running_loop()
        pending = Pending(body, content_type, loop.create_future(), call_id)
        session.enqueue(pending)
        self.stats.page_messages_in += 1
        if session.state is SessionState.ACTIVE:
            self._flush(session)
        if s.reply_mode == "accept":
            pending.done.add_done_callback(functools.partial(self._accepted_done, session))
            return Outcome(202, "Accepted")
        if not pending.done.done():
            pending.timer = loop.call_later(
                s.delivery_timeout, self._delivery_timeout, session, pending
            )
        return pending.done

    def _delivery_timeout(self, session: GwSession, pending: Pending) -> None:
        pending.timer = None
        if pending.done.done():
            return
        session.unqueue(pending)  # still waiting for the session: it never will be sent
        pending.settle(Outcome(408, "Delivery Timeout"))

    async def _forward(self, owner: str, page: PageMessage) -> Outcome | None:
        """Hand the MESSAGE to the owner node and answer with its outcome (ARCHITECTURE §4);
        None when nobody listens on the owner's inbox (it died: look again)."""
        if self.rpc is None:
            return Outcome(503, "Session Owned Elsewhere")
        self.stats.forwarded_to_owner += 1
        try:
            reply = await self.rpc.ask(owner, page, self.forward_timeout)
        except NodeUnreachable:
            if self.registry is not None:
                self.registry.forget(owner)
            return None
        except TimeoutError:
            self.stats.forward_timeouts += 1
            return Outcome(408, "Owner Did Not Answer")
        except BadRpc:
            return Outcome(500, "Owner Failed")
        if not isinstance(reply, Answer):
            return Outcome(500, "Owner Failed")
        return Outcome(reply.status, reply.reason, list(reply.headers))

    async def on_rpc(self, request: RpcRequest) -> RpcReply:
        """Requests from other nodes: forwarded MESSAGEs and session ends."""
        if isinstance(request, EndSession):
            return Ended(await self.end_session(request.key, request.reason))
        request.hops += 1
        outcome = await self.route_page(request)
        return Answer(outcome.status, outcome.reason, outcome.headers)

    def _accepted_done(self, session: GwSession, done: asyncio.Future[Outcome]) -> None:
        """Accept mode: the MESSAGE got 202; a failure is counted and published."""
        if done.cancelled():
            return
        outcome = done.result()
        if outcome.status >= 300:
            self.stats.page_answers[outcome.status] += 1
            self._spawn(
                self._publish(
                    ev.DELIVERY_FAILED,
                    {
                        "key": session.key,
                        "direction": "page_to_msrp",
                        "code": outcome.status,
                        "reason": outcome.reason,
                    },
                )
            )

    async def _create_outbound(self, page: PageMessage) -> GwSession | None:
        """A new key: create the record (atomic) and start the MSRP leg; None if we lost."""
        now = time.time()
        record = SessionRecord(
            key=page.key,
            state="setup",
            origin="msg_to_msrp",
            owner=self.settings.node_id,
            content_types=list(page.content_types or self.settings.content_types),
            created=now,
            last_message=now,
            last_send=now,
        )
        mirror_into(page, record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._creating[page.key] = done
        try:
            if not await self.store.create(record):
                return None
            return self._start_outbound(page, record, fresh=True)
        finally:
            del self._creating[page.key]
            done.set_result(None)

    def _start_outbound(
        self, page: PageMessage, record: SessionRecord, *, fresh: bool = False
    ) -> GwSession:
        """Own `record` and set up a new MSRP leg for it (new key, or taken over)."""
        if not fresh:
            mirror_into(page, record)
            record.state = "setup"
            record.origin = "msg_to_msrp"
            record.content_types = list(page.content_types or self.settings.content_types)
        session = GwSession(key=page.key, origin="msg_to_msrp", record=record, sink=self._sink)
        self.sessions[page.key] = session
        session.trace = page.key in self.traced
        self.stats.sessions_created["msg_to_msrp"] += 1
        self.setups_pending += 1
        self._spawn(self._setup(session, page, fresh))  # not kept on the session: it ends
        return session

    async def _setup(self, session: GwSession, page: PageMessage, fresh: bool) -> None:
        try:
            await self._set_up(session, page, fresh)
        finally:
            self.setups_pending -= 1

    async def _set_up(self, session: GwSession, page: PageMessage, fresh: bool) -> None:
        s = self.settings

        local_uri = self.msrp.new_local_uri()
        setup = None if s.msrp_setup == "none" else s.msrp_setup
        try:  # through the relay, if one is configured (RFC 4976): its Use-Path, then us
            offer = self.legs.offer(local_uri, session.record.content_types, setup)
        except MsrpSessionError as exc:
            await self._setup_failed(session, exc.code, "MSRP Relay Unavailable", None, None)
            return
        hop = self.onward(session.record)
        invite = self.sip.new_request(
            "INVITE",
            page.ruri,
            from_=page.page_from,
            to=page.page_to,
            body=offer,
            content_type="application/sdp",
            headers=[("Contact", f"<{self.sip.contact_uri('UDP')}>"), *hop.headers],
            max_forwards=hop.max_forwards,
        )
        session.invite = invite
        session.call_id = invite.call_id
        self.by_call_id[invite.call_id] = session
        self._note_trace_ids(session)
        code: int | None = None
        reason: str | None = None
        try:
            if not fresh:
                rec = session.record
                await self.store.update(
                    session.key,
                    state="setup",
                    origin="msg_to_msrp",
                    msg_from=rec.msg_from,
                    msg_to=rec.msg_to,
                    msg_ruri=rec.msg_ruri,
                    content_types=rec.content_types,
                )
            response, dialog = await self._invite(invite, s.setup_timeout)
            if response.local is None and response.status >= 300:
                # The event reports a negative reply only; after a 2xx (MSRP leg failed) or
                # with no reply at all its code and reason are null (reference semantics).
                code, reason = response.status, response.reason
            if dialog is None:
                status = response.status if response.status >= 300 else 500
                if response.local is LocalFailure.TIMEOUT or status == 487:
                    status = 408
                raise _SetupFailed(status, response.reason if code else "No Answer From MSRP Side")
            session.dialog = dialog
            session.invite = None  # only a CANCEL needed it: the dialog has what BYE needs
            if session.state is not SessionState.INVITING:  # ended meanwhile (MI, drain)
                await self._bye(session)
                return
            session.transition(SessionState.CONNECTING)
            await self._start_msrp_leg(session, response, local_uri, setup)
        except _SetupFailed as exc:
            await self._setup_failed(session, exc.status, exc.reason, code, reason)
            return
        except (RedisError, OSError) as exc:
            await self._setup_failed(session, 503, f"Store Error: {exc}", None, None)
            return
        if session.state.over:  # ended while connecting
            await self._bye(session)
            if session.msrp is not None:
                session.msrp.close("session ended")
            return
        session.transition(SessionState.ACTIVE)
        log.info(
            "session started",
            extra={"key": session.key, "origin": "msg_to_msrp", "call_id": invite.call_id},
        )
        await self._publish(ev.SESSION_STARTED, {"key": session.key, "origin": "msg_to_msrp"})
        self._flush(session)

    async def _invite(self, invite: Request, timeout: float) -> tuple[Response, Any]:
        """INVITE; if no final answer within `timeout`, CANCEL and take what comes (§9.1)."""
        task = asyncio.ensure_future(self.sip.invite(invite))
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            with contextlib.suppress(Exception):
                await self.sip.cancel(invite)
            done, _ = await asyncio.wait({task}, timeout=64 * self.sip.config.timers.t1)
            if not done:
                task.cancel()
                return _synthetic(invite, 408, "Request Timeout"), None
            response, dialog = task.result()
            if dialog is not None:  # answered while we cancelled: hang up
                await self.sip.bye(dialog)
                dialog = None
            if response.status == 487 or response.status < 300:
                return _synthetic(invite, 408, "Request Timeout"), None
            return response, None
        result: tuple[Response, Any] = task.result()
        return result

    async def _start_msrp_leg(
        self, session: GwSession, response: Response, local_uri: Any, our_setup: str | None
    ) -> None:
        assert session.dialog is not None
        try:
            answer = parse_sdp(response.body)
            media = find_msrp_media(answer)
        except SdpError:
            media = None
        if media is None:
            await self._bye(session)
            raise _SetupFailed(488, "No MSRP Stream In Answer")
        try:
            active = we_connect(we_offered=True, offer=our_setup, answer=media.setup)
        except SdpError:
            await self._bye(session)
            raise _SetupFailed(488, "Incompatible a=setup") from None
        session.peer_types = self.types(media.accept_types)
        try:
            handle = self.legs.open(
                session,
                media,
                local_uri=local_uri,
                role="active" if active else "passive",
                types=session.record.content_types,
            )
        except MsrpSessionError as exc:  # the relay went down during the INVITE
            await self._bye(session)
            raise _SetupFailed(exc.code, "MSRP Relay Unavailable") from exc
        session.msrp = handle
        try:
            await handle.connect(timeout=self.settings.setup_timeout)
        except (MsrpSessionError, TimeoutError, OSError) as exc:
            handle.close("connect failed")
            await self._bye(session)
            raise _SetupFailed(480, "MSRP Connection Failed") from exc
        d = session.dialog
        await self.store.update(
            session.key,
            state="active",
            call_id=d.call_id,
            local_tag=d.local_tag,
            remote_tag=d.remote_tag,
            local_path=[str(local_uri)],
            peer_path=list(media.path),
        )
        if handle.closed:  # lost while we were recording it (its SessionClosed came early)
            await self._bye(session)
            raise _SetupFailed(480, "MSRP Connection Failed")

    async def _setup_failed(
        self, session: GwSession, status: int, reason: str, code: int | None, sip_reason: str | None
    ) -> None:
        self.stats.setup_failed[status] += 1
        log.info("session setup failed: %d %s", status, reason, extra={"key": session.key})
        rec = session.record
        self._fail_queue(session, Outcome(status, reason))  # answered first: no wait for Redis
        # The record goes before the event does: whoever reacts to it finds the key free.
        with contextlib.suppress(RedisError, OSError):
            await self.store.delete(session.key, owner=self.settings.node_id)
        await self._publish(
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
        await self._forget(session, "setup failed")
        if self.settings.failure_notice:
            self._spawn(self._failure_notice(rec, status, reason))

    async def _failure_notice(self, rec: SessionRecord, status: int, reason: str) -> None:
        text = self.settings.failure_notice.format(code=status, reason=reason, key=rec.key)
        hop = self.onward(rec)
        req = self.sip.new_request(
            "MESSAGE",
            rec.msg_ruri,
            from_=parse_name_addr(f"<{rec.msg_from}>"),
            to=parse_name_addr(f"<{rec.msg_to}>"),
            body=text.encode(),
            content_type="text/plain",
            headers=hop.headers,
            max_forwards=hop.max_forwards,
        )
        await self.sip.request(req)

    def _flush(self, session: GwSession) -> None:
        """Hand queued messages to the MSRP session in order; their outcomes come as events
        of the session's MSRP handle (`_msrp_outcome`), which settle their futures."""
        handle = session.msrp
        if handle is None or session.state is not SessionState.ACTIVE:
            return
        report = True if self.settings.require_success_report else None
        while (pending := session.pop()) is not None:
            if pending.done.done():
                continue
            try:
                msg = handle.send_nowait(pending.body, pending.content_type, success_report=report)
            except (MsrpSessionError, ValueError) as exc:
                code = getattr(exc, "code", 413)
                pending.settle(self._send_failed(session, code))
                continue
            self._sending[msg.message_id] = pending
            if msg.outcome is not None:  # refused at once: its event went by before this
                self._msrp_outcome(session, msg.outcome)


class _SetupFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _synthetic(request: Request, status: int, reason: str) -> Response:
    from gw.sip.transaction import build_response

    response = build_response(request, status, reason)
    response.local = LocalFailure.TIMEOUT
    return response
