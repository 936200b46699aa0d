"""Session mode to page mode: `msrp_gw_answer`, SEND -> MESSAGE, in-dialog requests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from redis.exceptions import RedisError

from gw.gateway import events as ev
from gw.gateway.base import ALLOW, TOUCH_INTERVAL, log
from gw.gateway.legs import Role
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.loops import hops_of
from gw.gateway.mapping import sip_to_msrp
from gw.gateway.policy import Decision
from gw.gateway.session import GwSession
from gw.gateway.state import SessionState
from gw.gateway.stats import Direction
from gw.msrp.endpoint import MsrpSessionError
from gw.msrp.events import (
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    ReportIgnored,
    RequestRejected,
    SessionClosed,
    SessionEvent,
)
from gw.sip.endpoint import IncomingRequest
from gw.sip.message import Request, Response
from gw.sip.sdp import (
    SdpError,
    answer_setup,
    find_msrp_media,
    negotiate_types,
    parse_sdp,
)
from gw.sip.uri import SipSyntaxError
from gw.store.records import SessionRecord


class SessionSide(Lifecycle):
    async def msrp_gw_answer(self, incoming: IncomingRequest, decision: Decision) -> None:
        request = incoming.request
        if self.draining:
            self._unavailable(incoming, "draining")
            return
        try:
            offer = parse_sdp(request.body)
            media = find_msrp_media(offer)
        except SdpError as exc:
            self._reject(incoming, 400, "Bad SDP", str(exc))
            return
        if media is None:
            self._reject(
                incoming,
                488,
                "No MSRP Stream",
                "sdp",
                [("Warning", '304 msrp-gw "Media type not available"')],
            )
            return
        types = negotiate_types(
            media.accept_types, decision.content_types or self.settings.content_types
        )
        if not types:
            self._reject(
                incoming,
                488,
                "No Acceptable Content Type",
                "sdp",
                [("Warning", '305 msrp-gw "Incompatible media format"')],
            )
            return
        old = self.sessions.get(decision.key)
        if old is not None:
            await self.end_session(decision.key, "replaced")
        setup = answer_setup(media.setup) if media.setup else None
        role: Role = "active" if setup == "active" else "passive"
        local_uri = self.msrp.new_local_uri()
        now = time.time()
        record = SessionRecord(
            key=decision.key,
            state="active",
            origin="answer",
            owner=self.settings.node_id,
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
        )
        hops = hops_of(request)
        record.marks, record.max_forwards = list(hops.marks), hops.max_forwards
        try:
            if not await self.store.create(record):
                await self.store.delete(decision.key)
                if not await self.store.create(record):
                    self._unavailable(incoming, "session create race")
                    return
        except (RedisError, OSError) as exc:
            log.warning("store unavailable: %s", exc)
            self._unavailable(incoming, "store")
            return
        session = GwSession(
            key=decision.key,
            origin="answer",
            record=record,
            state=SessionState.ACTIVE,
            call_id=request.call_id,
            peer_types=self.types(media.accept_types),
            sink=self._sink,
        )
        try:
            handle = self.legs.open(session, media, local_uri=local_uri, role=role, types=types)
        except MsrpSessionError as exc:  # relay configured but down
            with contextlib.suppress(RedisError, OSError):
                await self.store.delete(decision.key)
            self._unavailable(incoming, f"msrp relay: {exc}")
            return
        session.msrp = handle
        self.sessions[decision.key] = session
        session.trace = decision.key in self.traced
        self._note_trace_ids(session)
        self.by_call_id[request.call_id] = session
        self.stats.sessions_created["answer"] += 1
        answer = self.legs.answer(media, handle, types=types, setup=setup, offer=offer)
        incoming.respond(200, body=answer, content_type="application/sdp")
        session.dialog = incoming.dialog
        if session.dialog is not None:
            await self.store.update(decision.key, local_tag=session.dialog.local_tag)
        log.info(
            "session started",
            extra={"key": session.key, "origin": "answer", "call_id": request.call_id},
        )
        await self._publish(ev.SESSION_STARTED, {"key": session.key, "origin": "answer"})
        if role == "active":
            self._spawn(self._connect_answered(session))

    async def _connect_answered(self, session: GwSession) -> None:
        handle = session.msrp
        if handle is None:
            return  # ended meanwhile
        try:
            await handle.connect(timeout=self.settings.setup_timeout)
        except (MsrpSessionError, TimeoutError, OSError) as exc:
            log.info("cannot connect to MSRP peer: %s", exc, extra={"key": session.key})
            await self.end_session(session.key, "msrp connect failed")

    def _msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        """Events of the session's MSRP handle(s) (`GwSession.on_msrp_event`)."""
        if isinstance(event, MessageReceived):
            if not self._to_page_now(session, event):
                self._spawn(self._to_page(session, event))
        elif isinstance(event, MessageDelivered | MessageFailed | MessageAborted):
            self._msrp_outcome(session, event)
        elif isinstance(event, RequestRejected):
            self.stats.msrp_rejected[event.code] += 1
            log.info(
                "msrp request rejected: %d %s", event.code, event.reason, extra={"key": session.key}
            )
        elif isinstance(event, ReportIgnored):
            self.stats.msrp_reports_ignored += 1
            log.info(
                "msrp REPORT ignored: %s %s (%s)",
                event.message_id,
                event.status,
                event.reason,
                extra={"key": session.key},
            )
        elif isinstance(event, SessionClosed) and session.state is SessionState.ACTIVE:
            # While setting up, the setup task handles a failed MSRP leg (precise answer).
            if session.msrp is not None and not session.msrp.closed:
                return  # an MSRP session a re-INVITE replaced closed, not the current one
            log.info("msrp session closed: %s", event.reason, extra={"key": session.key})
            self._spawn(self.end_session(session.key, f"msrp closed: {event.reason}"))

    def _to_page_now(self, session: GwSession, msg: MessageReceived) -> bool:
        """The common case without a task: no deadline refresh due or in flight, none of
        the session's messages waiting for one, and the MESSAGE can be sent at once
        (`SipEndpoint.request_nowait`); its outcome comes by callback. False: nothing was
        done, `_to_page` (a task) does it all."""
        if (
            session.to_page_waiting is not None
            or session.touching_msrp is not None
            or time.time() - session.touched_msrp >= TOUCH_INTERVAL
        ):
            return False
        self.stats.msrp_messages_in += 1
        session.to_page_waiting = deque((msg,))
        self._drain_to_page(session)  # sent at once unless it must be awaited
        return True

    def _drain_to_page(self, session: GwSession) -> None:
        """Send the session's queued MSRP messages as MESSAGEs, in order, with no await in
        between. One that has to be awaited before it is sent (a host name to resolve, TCP
        for its size) stops the drain; it resumes once that one is handed to its transport
        (`on_sent`), so no later message overtakes it. The queue is dropped when empty."""
        queue = session.to_page_waiting
        while queue:
            msg = queue.popleft()
            req = self._page_request(session, msg)
            if req is None:
                continue  # answered with a failure REPORT
            fut = self.sip.request_nowait(req)
            if fut is None:
                self._spawn(self._send_page(session, msg, req))
                return
            self._await_page(session, msg, req, fut)
        if session.to_page_waiting is queue:
            session.to_page_waiting = None

    def _page_sent(self) -> None:
        """Flow control: with `max_pending_messages` MESSAGEs unanswered, stop reading MSRP
        input (TCP pushes back on the senders) until half of them are answered. Without
        it, an MSRP side faster than the page side piles up transactions until they time
        out together."""
        self.pages_pending += 1
        if self.pages_pending >= self.settings.max_pending_messages and not self.msrp.input_paused:
            self.msrp.pause_input()
            self.stats.msrp_input_paused += 1
            log.warning(
                "%d MESSAGEs unanswered: MSRP input paused until %d",
                self.pages_pending,
                self.settings.max_pending_messages // 2,
            )

    def _page_answered(self) -> None:
        self.pages_pending -= 1
        if self.msrp.input_paused and self.pages_pending <= self.settings.max_pending_messages // 2:
            self.msrp.resume_input()
            log.info("MSRP input resumed (%d MESSAGEs unanswered)", self.pages_pending)

    def _await_page(
        self, session: GwSession, msg: MessageReceived, req: Request, fut: asyncio.Future[Response]
    ) -> None:
        started = time.perf_counter()
        self._page_sent()

        def answered(f: asyncio.Future[Response]) -> None:
            self._page_answered()
            if f.cancelled():
                return  # the endpoint closed
            failure = self._page_outcome(session, msg, req, started, f.result())
            if failure is not None:
                self._spawn(failure)

        fut.add_done_callback(answered)

    async def _to_page(self, session: GwSession, msg: MessageReceived) -> None:
        """The MESSAGE for an MSRP message once the session's deadline is refreshed (when
        due). Messages arriving meanwhile join the queue of the task that refreshes, which
        sends them all in their order of arrival, with no await in between; neither the
        task-free path nor a later task can overtake them (a waiter resumed only after a
        message that arrived later had been sent: out of order at the page-mode user)."""
        self.stats.msrp_messages_in += 1
        waiting = session.to_page_waiting
        if waiting is not None:
            waiting.append(msg)
            return
        session.to_page_waiting = deque((msg,))
        try:
            await self._refresh_msrp(session)
        finally:
            self._drain_to_page(session)

    async def _send_page(self, session: GwSession, msg: MessageReceived, req: Request) -> None:
        """A MESSAGE that has to be awaited before it is sent; the session's later
        messages wait in its queue until it is (see `_drain_to_page`)."""
        started = time.perf_counter()
        self._page_sent()
        try:
            response = await self.sip.request(
                req, on_sent=functools.partial(self._drain_to_page, session)
            )
        finally:
            self._page_answered()
        failure = self._page_outcome(session, msg, req, started, response)
        if failure is not None:
            await failure

    async def _refresh_msrp(self, session: GwSession) -> None:
        """Push the session's deadline in Redis (MSRP side) when due, or wait for the push
        in flight. A store failure is counted once, not raised: Redis is not in the
        message's path."""
        waiting = session.touching_msrp is not None
        if not waiting and time.time() - session.touched_msrp < TOUCH_INTERVAL:
            return
        try:
            await self._refresh_deadline(session, page=False)
        except (RedisError, OSError):
            if not waiting:
                self.stats.store_errors += 1

    def _page_request(self, session: GwSession, msg: MessageReceived) -> Request | None:
        """The MESSAGE for an MSRP message; None (after a 403 REPORT) if the session's
        coordinates do not make one."""
        rec = session.record
        try:
            coords = self.coordinates(rec.msg_from, rec.msg_to, rec.msg_ruri)
            hop = self.onward(rec)
            req = self.sip.new_request(
                "MESSAGE",
                coords.ruri,
                from_=coords.from_,
                to=coords.to,
                body=msg.body,
                content_type=msg.content_type,
                headers=hop.headers,
                max_forwards=hop.max_forwards,
            )
        except SipSyntaxError as exc:
            log.warning("bad MESSAGE coordinates: %s", exc, extra={"key": session.key})
            if session.msrp is not None:
                session.msrp.report_failure(msg.message_id, 403, "Bad Coordinates")
            return None
        if session.trace:
            self.trace_call_ids.add(req.call_id)
        return req

    def _page_outcome(
        self,
        session: GwSession,
        msg: MessageReceived,
        req: Request,
        started: float,
        response: Response,
    ) -> Coroutine[Any, Any, None] | None:
        """Count, log and REPORT the page-mode answer; a failure also has an event to
        publish, returned for the caller to await or spawn."""
        if self.on_latency is not None:
            self.on_latency("msrp_to_page", time.perf_counter() - started)
        handle = session.msrp
        delivered = 200 <= response.status < 300
        if not delivered or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.DEBUG if delivered else logging.INFO,
                "msrp message %s (%d bytes %s) -> MESSAGE %d %s",
                msg.message_id,
                len(msg.body),
                msg.content_type,
                response.status,
                response.reason,
                extra={"key": session.key, "call_id": req.call_id},
            )
        if delivered:
            self.stats.delivered[Direction.MSRP_TO_PAGE] += 1
            if handle is not None and msg.success_report:
                handle.report_success(msg.message_id)
            return None
        self.stats.failed[Direction.MSRP_TO_PAGE][response.status] += 1
        code, reason = sip_to_msrp(response.status)
        if handle is not None and msg.failure_report != "no":
            handle.report_failure(msg.message_id, code, reason)
        return self._publish(
            ev.DELIVERY_FAILED,
            {
                "key": session.key,
                "direction": "msrp_to_page",
                "code": response.status,
                "reason": response.reason,
            },
        )

    async def _in_dialog(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        session = self.by_call_id.get(request.call_id)
        if request.method == "BYE":
            incoming.respond(200)
            if session is not None:
                await self.end_session(session.key, "bye", send_bye=False)
            return
        if request.method == "INVITE" and session is not None:
            await self._reinvite(incoming, session)
            return
        if request.method in ("MESSAGE", "INFO", "UPDATE", "OPTIONS"):
            incoming.respond(
                200 if request.method == "OPTIONS" else 405, headers=[("Allow", ALLOW)]
            )
            return
        incoming.respond(405, headers=[("Allow", ALLOW)])

    async def _reinvite(self, incoming: IncomingRequest, session: GwSession) -> None:
        """A new offer: update the peer path and types (the MSRP session is re-created)."""
        request = incoming.request
        try:
            offer = parse_sdp(request.body) if request.body else None
            media = find_msrp_media(offer) if offer is not None else None
        except SdpError:
            offer = media = None
        if media is None or session.msrp is None:
            incoming.respond(488, "Not Acceptable Here")
            return
        types = negotiate_types(media.accept_types, session.record.content_types)
        if not types:
            incoming.respond(488, "No Acceptable Content Type")
            return
        old = session.msrp
        setup = answer_setup(media.setup) if media.setup else None
        role: Role = "active" if setup == "active" else "passive"
        local_uri = old.local_uri
        if [str(u) for u in old.peer_path] != list(media.path):
            try:
                new = self.legs.open(
                    session, media, local_uri=self.msrp.new_local_uri(), role=role, types=types
                )
            except MsrpSessionError:  # relay configured but down
                self._unavailable(incoming, "msrp relay down")
                return
            session.msrp = new
            # Closed after the swap: its SessionClosed must not end the session (_msrp_event).
            old.close("re-INVITE")
            local_uri = session.msrp.local_uri
        session.peer_types = self.types(media.accept_types)
        answer = self.legs.answer(media, session.msrp, types=types, setup=setup, offer=offer)
        incoming.respond(200, body=answer, content_type="application/sdp")
        with contextlib.suppress(RedisError, OSError):
            await self.store.update(
                session.key, peer_path=list(media.path), local_path=[str(local_uri)]
            )
        if role == "active" and session.msrp is not old:
            self._spawn(self._connect_answered(session))
