"""Session mode to page mode: an MSRP message becomes a MESSAGE, and its answer a REPORT.

Messages of one session reach the page-mode user in their order of arrival. Usually a
message goes out at once (`received`). When the session's deadline is due for a
refresh, or one is in flight, it joins the session's waiting queue, which the refresh
procedure sends in order once the store answered; `SendPage` effects keep that order
to the wire. With `max_pending_messages` MESSAGEs unanswered, MSRP input pauses (TCP
pushes back on the senders) until half of them are answered.
"""

from __future__ import annotations

import logging
from collections import deque

from redis.exceptions import RedisError

from gw.gateway import events as ev
from gw.gateway.commands import (
    PageTicket,
    PauseInput,
    Procedure,
    Refresh,
    ReportMsrp,
    SendPage,
    Spawn,
)
from gw.gateway.context import Context, log
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.mapping import sip_to_msrp
from gw.gateway.session import GwSession
from gw.gateway.settings import TOUCH_INTERVAL
from gw.gateway.stats import Direction
from gw.msrp.events import MessageReceived
from gw.sip.message import Request, Response
from gw.sip.uri import SipSyntaxError

__all__ = ["MsrpToPage"]


class MsrpToPage:
    def __init__(self, ctx: Context, lifecycle: Lifecycle) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self.unanswered = 0  # MESSAGEs sent for MSRP messages, not answered yet
        self.input_paused = False

    def received(self, session: GwSession, msg: MessageReceived) -> None:
        """An MSRP message of the session, complete."""
        ctx = self.ctx
        ctx.stats.msrp_messages_in += 1
        waiting = session.to_page_waiting
        if waiting is not None:
            waiting.append(msg)  # behind the messages waiting for a refresh
            return
        session.to_page_waiting = deque((msg,))
        if (
            session.touching_msrp is None
            and ctx.clock.time() - session.touched_msrp < TOUCH_INTERVAL
        ):
            self.drain(session)
        else:
            ctx.out(Spawn(self.refresh_then_drain(session)))

    def refresh_then_drain(self, session: GwSession) -> Procedure[None]:
        """Refresh the deadline (a store failure is counted, not raised: the store is not
        in the message's path), then send what waits, in order."""
        try:
            yield Refresh(session, False, self.lifecycle.refresh(session, page=False))
        except (RedisError, OSError):
            self.ctx.stats.store_errors += 1
        finally:
            self.drain(session)

    def drain(self, session: GwSession) -> None:
        """Send the session's waiting MSRP messages as MESSAGEs, in order."""
        queue = session.to_page_waiting
        session.to_page_waiting = None
        if not queue:
            return
        for msg in queue:
            req = self.request_for(session, msg)
            if req is None:
                continue  # answered with a failure REPORT
            ticket = PageTicket(
                session,
                msg.message_id,
                len(msg.body),
                msg.content_type,
                msg.success_report,
                msg.failure_report,
                self.ctx.clock.perf(),
            )
            self.sent()
            self.ctx.out(SendPage(ticket, req))

    def request_for(self, session: GwSession, msg: MessageReceived) -> Request | None:
        """The MESSAGE for an MSRP message; None (after a 403 REPORT) if the session's
        coordinates do not make one."""
        ctx = self.ctx
        rec = session.record
        try:
            coords = ctx.table.coordinates(rec.msg_from, rec.msg_to, rec.msg_ruri)
            hop = ctx.onward(rec)
            req = ctx.sip.new_request(
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
                ctx.out(ReportMsrp(session.msrp, msg.message_id, 403, "Bad Coordinates"))
            return None
        if session.trace:
            ctx.table.trace_call_ids.add(req.call_id)
        return req

    def sent(self) -> None:
        """Flow control: with `max_pending_messages` MESSAGEs unanswered, stop reading MSRP
        input until half of them are answered. Without it, an MSRP side faster than the
        page side piles up transactions until they time out together."""
        self.unanswered += 1
        limit = self.ctx.settings.max_pending_messages
        if self.unanswered >= limit and not self.input_paused:
            self.input_paused = True
            self.ctx.out(PauseInput(True))
            self.ctx.stats.msrp_input_paused += 1
            log.warning(
                "%d MESSAGEs unanswered: MSRP input paused until %d", self.unanswered, limit // 2
            )

    def answered(self, ticket: PageTicket, response: Response | None) -> None:
        """The MESSAGE's final response (None: the endpoint closed). Count, log and REPORT
        it; a failure is published."""
        ctx = self.ctx
        self.unanswered -= 1
        if self.input_paused and self.unanswered <= ctx.settings.max_pending_messages // 2:
            self.input_paused = False
            ctx.out(PauseInput(False))
            log.info("MSRP input resumed (%d MESSAGEs unanswered)", self.unanswered)
        if response is None:
            return
        if ctx.on_latency is not None:
            ctx.on_latency("msrp_to_page", ctx.clock.perf() - ticket.started)
        session = ticket.session
        handle = session.msrp
        delivered = 200 <= response.status < 300
        if not delivered or log.isEnabledFor(logging.DEBUG):
            log.log(
                logging.DEBUG if delivered else logging.INFO,
                "msrp message %s (%d bytes %s) -> MESSAGE %d %s",
                ticket.message_id,
                ticket.body_size,
                ticket.content_type,
                response.status,
                response.reason,
                extra={"key": session.key, "call_id": response.call_id},
            )
        if delivered:
            ctx.stats.delivered[Direction.MSRP_TO_PAGE] += 1
            if handle is not None and ticket.success_report:
                ctx.out(ReportMsrp(handle, ticket.message_id, 200))
            return
        ctx.stats.failed[Direction.MSRP_TO_PAGE][response.status] += 1
        code, reason = sip_to_msrp(response.status)
        if handle is not None and ticket.failure_report != "no":
            ctx.out(ReportMsrp(handle, ticket.message_id, code, reason))
        ctx.publish(
            ev.DELIVERY_FAILED,
            {
                "key": session.key,
                "direction": "msrp_to_page",
                "code": response.status,
                "reason": response.reason,
            },
        )
