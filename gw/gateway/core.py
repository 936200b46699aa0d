"""The gateway core, sans-I/O: fed SIP requests, MSRP events, store results and time; it
returns effects (its `Outbox`) and procedures (gw.gateway.commands), and never awaits.

It is composed of small parts, each with its collaborators given explicitly:

    PageToMsrp  (to_msrp.py)   a MESSAGE to an MSRP SEND, and its answer
    Routing     (routing.py)   the slow path: refresh, forward, take over, create
    Setups      (setup.py)     our INVITE and MSRP leg for `msg_to_msrp`
    Answering   (answering.py) `msrp_gw_answer` and in-dialog requests
    MsrpToPage  (to_page.py)   an MSRP message to a MESSAGE, its answer to a REPORT
    Lifecycle   (lifecycle.py) end, expiry, rebuild, drain
    LocalSessions (table.py)   the sessions this node owns, by key and Call-ID

The asyncio adapter (gw.gateway.engine.Gateway) feeds it and carries its effects out.
"""

from __future__ import annotations

from collections.abc import Callable

from gw.gateway.answering import Answering
from gw.gateway.commands import Procedure, Respond, ServerTxn, Spawn
from gw.gateway.context import Clock, Context, SipRequests, SystemClock, log
from gw.gateway.legs import Legs
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.loops import hops_of
from gw.gateway.policy import ANSWER, MSG_TO_MSRP, OPTIONS, Policy
from gw.gateway.routing import Routing
from gw.gateway.rules import screen_request
from gw.gateway.session import GwSession, Outcome, Pending
from gw.gateway.settings import ALLOW, GatewaySettings
from gw.gateway.setup import Setups
from gw.gateway.state import SessionState
from gw.gateway.to_msrp import PageToMsrp
from gw.gateway.to_page import MsrpToPage
from gw.ids import random_hex
from gw.msrp.events import (
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    ReportIgnored,
    RequestRejected,
    SessionBound,
    SessionClosed,
    SessionEvent,
)
from gw.sip.message import Request
from gw.sip.uri import SipSyntaxError

__all__ = ["GatewayCore"]


class GatewayCore:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        sip: SipRequests,
        legs: Legs,
        policy: Policy,
        clock: Clock | None = None,
        new_id: Callable[[], str] = random_hex,
    ) -> None:
        self.ctx = ctx = Context(settings, sip, legs, clock or SystemClock())
        self.policy = policy
        self.to_msrp = PageToMsrp(ctx, new_id)
        self.lifecycle = Lifecycle(ctx, self.to_msrp)
        self.setups = Setups(ctx, self.to_msrp, self.lifecycle)
        self.routing = Routing(ctx, self.to_msrp, self.setups, self.lifecycle)
        self.answering = Answering(ctx, self.lifecycle)
        self.to_page = MsrpToPage(ctx, self.lifecycle)
        self.to_msrp.route = self.routing.answer_page
        self.to_msrp.refuse_new = self.refuse_new

    def refuse_new(self, key: str) -> Outcome | None:
        """Overload: at `max_pending_setups`, a MESSAGE whose key has no session here gets a
        fast 503 at once. Telling a new key from another node's session would take a store
        round trip and a task per MESSAGE, which is what made set-up goodput collapse under
        overload; the client retries after Retry-After."""
        if self.ctx.table.get(key) is not None or not self.setups.at_capacity():
            return None
        return self.setups.refusal(key)

    # -- SIP requests ----------------------------------------------------------------------

    def request(self, txn: ServerTxn) -> None:
        """A SIP request from the endpoint (its server transaction: `txn`)."""
        ctx = self.ctx
        request = txn.request
        method = request.method
        if method == "ACK":
            return
        if txn.dialog is not None or request.to.tag is not None:
            ctx.out(Spawn(self.answering.in_dialog(txn)))
            return
        if method == "CANCEL":
            return  # answered by the endpoint
        refusal = screen_request(
            method, hops_of(request), ctx.deployment, own_via=self.own_via(request)
        )
        if refusal is not None:
            ctx.refuse(txn, refusal)
            return
        decision = self.policy.decide(request)
        if decision.action == OPTIONS:
            ctx.out(Respond(txn, 200, "OK", [("Allow", ALLOW), ("Accept", "*/*")]))
        elif decision.action == MSG_TO_MSRP and method == "MESSAGE":
            self.to_msrp.message(txn, decision)
        elif decision.action == ANSWER and method == "INVITE":
            ctx.out(Spawn(self.answering.invite(txn, decision)))
        else:
            code = decision.code or 405
            headers = list(decision.headers)
            if code == 405:
                headers.append(("Allow", ALLOW))
            ctx.reject(txn, code, decision.reason or "Not Allowed", "policy", headers)

    def own_via(self, request: Request) -> bool:
        """A request we sent that a proxy routed back to us carries our own Via below the top."""
        try:
            vias = request.vias[1:]
        except SipSyntaxError:
            return False
        if not vias:
            return False
        ours = self.ctx.sip.own_sent_by()
        return any(v.sent_by in ours and (v.branch or "").startswith("z9hG4bK") for v in vias)

    # -- MSRP events -----------------------------------------------------------------------

    def msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        """An event of the session's MSRP leg(s)."""
        ctx = self.ctx
        if isinstance(event, MessageReceived):
            self.to_page.received(session, event)
        elif isinstance(event, MessageDelivered | MessageFailed | MessageAborted):
            self.to_msrp.outcome(session, event)
        elif isinstance(event, RequestRejected):
            ctx.stats.msrp_rejected[event.code] += 1
            log.info(
                "msrp request rejected: %d %s", event.code, event.reason, extra={"key": session.key}
            )
        elif isinstance(event, ReportIgnored):
            ctx.stats.msrp_reports_ignored += 1
            log.info(
                "msrp REPORT ignored: %s %s (%s)",
                event.message_id,
                event.status,
                event.reason,
                extra={"key": session.key},
            )
        elif isinstance(event, SessionBound):
            self.answering.bound(session)
        elif isinstance(event, SessionClosed) and session.state is SessionState.ACTIVE:
            # While setting up, the set-up procedure handles a failed leg (precise answer).
            if session.msrp is not None and not session.msrp.closed:
                return  # a leg a re-INVITE replaced closed, not the current one
            log.info("msrp session closed: %s", event.reason, extra={"key": session.key})
            ctx.out(Spawn(self.lifecycle.end(session, f"msrp closed: {event.reason}")))

    # -- timers ----------------------------------------------------------------------------

    def delivery_timeout(self, pending: Pending, session: GwSession) -> None:
        """A page-mode message's `delivery_timeout` passed (its StartTimer)."""
        self.to_msrp.delivery_timeout(pending, session)

    # -- procedures the adapter starts -----------------------------------------------------

    def end_session(self, key: str, reason: str, *, wait_bye: bool = True) -> Procedure[bool]:
        """End the key's session (MI; another node asking, which needs no wait for the BYE)."""
        return self.lifecycle.end_session(key, reason, wait_bye=wait_bye)

    def expired(self, key: str) -> Procedure[None]:
        return self.lifecycle.expired(key)

    def sweep(self) -> Procedure[None]:
        return self.lifecycle.sweep()

    def drain(self) -> Procedure[None]:
        return self.lifecycle.drain()
