"""Page mode to session mode (`msg_to_msrp`): one MESSAGE, from its policy decision to its
answer, top to bottom.

1. `message` screens the MESSAGE (type, body, draining). On the key's local, established
   session whose deadline was refreshed within a second, it goes on at once; otherwise
   the slow path (gw.gateway.routing: refresh, forward to the owner, take over, set up)
   runs as a procedure and calls `submit` in the end.
2. `submit` admits it to the session's queue (415, 503 Queue Full) and `flush` sends
   what the queue holds when the session is ACTIVE: a `SendMsrp` effect under a
   Message-ID we choose.
3. The MSRP side's outcome comes back as an event with that id (`outcome`), or the
   delivery timer fires first (`delivery_timeout`): `settle` gives the MESSAGE its
   answer, 200 for delivered, the mapped failure otherwise (docs/protocol-mapping.md).

In reply_mode "accept" the MESSAGE got 202 at submit; a failure is counted and published.
"""

from __future__ import annotations

from collections.abc import Callable

from gw.cluster.messages import PageMessage
from gw.gateway import events as ev
from gw.gateway.commands import (
    Procedure,
    Respond,
    SendMsrp,
    ServerTxn,
    Spawn,
    StartTimer,
    StopTimer,
    Wake,
)
from gw.gateway.context import Context, log
from gw.gateway.loops import hops_of
from gw.gateway.policy import Decision
from gw.gateway.rules import (
    Limits,
    admit,
    failed_answer,
    msrp_outcome_answer,
    screen_page_message,
)
from gw.gateway.session import GwSession, Outcome, Pending, retry_after_header
from gw.gateway.settings import TOUCH_INTERVAL
from gw.gateway.state import SessionState
from gw.gateway.stats import Direction
from gw.ids import random_hex
from gw.msrp.events import MessageAborted, MessageDelivered, MessageFailed
from gw.sip.uri import NameAddr

__all__ = ["PageToMsrp"]

MsrpOutcome = MessageDelivered | MessageFailed | MessageAborted


class PageToMsrp:
    def __init__(self, ctx: Context, new_id: Callable[[], str] = random_hex) -> None:
        self.ctx = ctx
        s = ctx.settings
        self.limits = Limits(s.max_queued_messages, s.max_queued_bytes, s.retry_after)
        self.new_id = new_id
        # Page-mode messages on the MSRP side, by MSRP Message-ID, until their outcome.
        self.sending: dict[str, Pending] = {}
        # The slow path: a procedure that ends in `submit` (set by GatewayCore).
        self.route: Callable[[PageMessage, ServerTxn, float], Procedure[None]] | None = None
        # At set-up capacity, the answer for a key with no local session (set by GatewayCore).
        self.refuse_new: Callable[[str], Outcome | None] | None = None

    # -- 1. the MESSAGE ------------------------------------------------------------------

    def message(self, txn: ServerTxn, decision: Decision) -> None:
        ctx = self.ctx
        request = txn.request
        ctype = request.content_type
        types = decision.content_types or ctx.settings.content_types
        refusal = screen_page_message(
            ctype,
            request.body,
            types,
            draining=ctx.draining,
            retry_after=ctx.settings.retry_after,
        )
        if refusal is not None or not ctype:
            if refusal is not None:
                ctx.refuse(txn, refusal)
            return
        started = ctx.clock.perf()
        session = self.ready_session(decision.key)
        if session is not None:
            self.submit(session, request.body, ctype, request.call_id, started, reply=txn)
            return
        if self.refuse_new is not None:
            refused = self.refuse_new(decision.key)
            if refused is not None:  # overload: refused before any task or store access
                self.answer(txn, started, refused)
                return
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
        assert self.route is not None
        ctx.out(Spawn(self.route(page, txn, started)))

    def ready_session(self, key: str) -> GwSession | None:
        """The key's local session when a message can go to it at once: not ending, and its
        deadline refreshed within TOUCH_INTERVAL (else the slow path refreshes it first)."""
        session = self.ctx.table.get(key)
        if (
            session is None
            or session.state.over
            or self.ctx.clock.time() - session.touched_page >= TOUCH_INTERVAL
        ):
            return None
        return session

    # -- 2. queue and send ---------------------------------------------------------------

    def submit(
        self,
        session: GwSession,
        body: bytes,
        content_type: str,
        call_id: str,
        started: float,
        *,
        reply: ServerTxn | None = None,
    ) -> Pending | Outcome:
        """Queue a page-mode message on the session, and send it when the session is up.

        Returns the answer when it is known at once (415, 503, 202 in accept mode; it has
        gone to `reply` already), else the Pending that `settle` will answer."""
        ctx = self.ctx
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
                ctx.stats.rejected[415] += 1
            else:
                ctx.stats.queue_full += 1
            if reply is not None:
                self.answer(reply, started, refused)
            return refused
        accepted = ctx.settings.reply_mode == "accept"
        pending = Pending(body, content_type, call_id, started, reply, accepted)
        session.enqueue(pending)
        ctx.stats.page_messages_in += 1
        if session.state is SessionState.ACTIVE:
            self.flush(session)
        if accepted:
            outcome = Outcome(202, "Accepted")
            if reply is not None:
                pending.reply = None  # answered now; the real outcome is only counted
                self.answer(reply, started, outcome)
            return outcome
        if pending.outcome is None:
            pending.timed = True
            ctx.out(StartTimer(pending, session, ctx.settings.delivery_timeout))
        return pending

    def flush(self, session: GwSession, *, binding: bool = False) -> list[Pending]:
        """Hand the queued messages to the MSRP leg in order; their outcomes come back as
        events with the Message-IDs chosen here (`outcome`). `binding`: the leg is being
        connected, and the first of them will be its first SEND (RFC 4975 §5.4 lets it
        carry a body), saving the empty SEND and its round trip. Returns what was handed."""
        handle = session.msrp
        state = session.state
        if handle is None or not (
            state is SessionState.ACTIVE or (binding and state is SessionState.CONNECTING)
        ):
            return []
        report = True if self.ctx.settings.require_success_report else None
        handed: list[Pending] = []
        while (pending := session.pop()) is not None:
            if pending.outcome is not None:
                continue
            pending.message_id = message_id = self.new_id()
            self.sending[message_id] = pending
            handed.append(pending)
            self.ctx.out(
                SendMsrp(session, handle, message_id, pending.body, pending.content_type, report)
            )
        return handed

    def recall(self, session: GwSession, handed: list[Pending]) -> None:
        """The leg failed before those handed with `flush(binding=True)` were answered:
        back to the head of the queue, so the set-up's failure answers them (their MSRP
        outcomes, if any come, no longer match)."""
        for pending in reversed(handed):
            # Still in `sending`: no outcome yet (one held for `release`, or a timeout, took
            # it out already).
            if self.sending.pop(pending.message_id, None) is pending:
                pending.message_id = ""
                session.requeue(pending)

    # -- 3. the outcome ------------------------------------------------------------------

    def outcome(self, session: GwSession, result: MsrpOutcome) -> None:
        """The MSRP side's outcome of a page-mode message: the MESSAGE's answer."""
        pending = self.sending.pop(result.message_id, None)
        if pending is None:
            return  # not one of ours (or settled by its timer already)
        if session.state is SessionState.CONNECTING:  # the binding SEND: the set-up goes on
            if session.early is None:
                session.early = []
            session.early.append((pending, result))
            return
        self._answer(session, pending, result)

    def release(self, session: GwSession) -> None:
        """The set-up ended (either way): answer the outcomes `outcome` held back. A
        message delivered is answered as such even if the set-up failed after it."""
        early, session.early = session.early, None
        for pending, result in early or ():
            self._answer(session, pending, result)

    def _answer(self, session: GwSession, pending: Pending, result: MsrpOutcome) -> None:
        ctx = self.ctx
        answer = msrp_outcome_answer(result, session.peer_types)
        if isinstance(result, MessageDelivered):
            ctx.stats.delivered[Direction.PAGE_TO_MSRP] += 1
        elif isinstance(result, MessageFailed):
            ctx.stats.failed[Direction.PAGE_TO_MSRP][result.code] += 1
        if answer.status >= 300:
            log.info(
                "message to MSRP failed: %s -> %d %s",
                getattr(result, "code", "aborted"),
                answer.status,
                answer.reason,
                extra={"key": session.key, "call_id": pending.call_id},
            )
        self.settle(pending, answer, key=session.key)

    def send_refused(self, session: GwSession, message_id: str, code: int) -> None:
        """The MSRP leg refused a `SendMsrp` before sending (MsrpSessionError, ValueError):
        the MESSAGE's answer for `code` (a 415 says what the peer accepts)."""
        pending = self.sending.pop(message_id, None)
        if pending is not None:
            self.settle(pending, failed_answer(code, session.peer_types), key=session.key)

    def delivery_timeout(self, pending: Pending, session: GwSession) -> None:
        """`delivery_timeout` passed without an outcome (the StartTimer of `submit`)."""
        pending.timed = False
        if pending.outcome is not None:
            return
        session.unqueue(pending)  # still waiting for the session: it never will be sent
        if pending.message_id:
            self.sending.pop(pending.message_id, None)
        self.settle(pending, Outcome(408, "Delivery Timeout"))

    def settle(self, pending: Pending, outcome: Outcome, *, key: str = "") -> None:
        """Give `pending` its outcome, once: to its MESSAGE, or to the procedure waiting."""
        if pending.outcome is not None:
            return
        pending.outcome = outcome
        ctx = self.ctx
        if pending.timed:
            pending.timed = False
            ctx.out(StopTimer(pending))
        reply = pending.reply
        if reply is not None:
            # A cancelled loop timer may keep its arguments (this Pending) until its
            # deadline: the request and its transaction must not live that long with it.
            pending.reply = None
            self.answer(reply, pending.started, outcome)
        elif pending.accepted:
            if outcome.status >= 300:  # 202 was given: count and publish the failure
                ctx.stats.page_answers[outcome.status] += 1
                ctx.publish(
                    ev.DELIVERY_FAILED,
                    {
                        "key": key,
                        "direction": "page_to_msrp",
                        "code": outcome.status,
                        "reason": outcome.reason,
                    },
                )
        else:
            ctx.out(Wake(pending))

    def fail_queue(self, session: GwSession, outcome: Outcome) -> None:
        """Answer every message still queued on the session (it ended or failed)."""
        while (pending := session.pop()) is not None:
            self.settle(pending, outcome, key=session.key)

    def answer(self, txn: ServerTxn, started: float, outcome: Outcome) -> None:
        """The MESSAGE's answer (a 503 always says when to retry)."""
        ctx = self.ctx
        if ctx.on_latency is not None:
            ctx.on_latency("page_to_msrp", ctx.clock.perf() - started)
        if outcome.status == 503 and not any(h == "Retry-After" for h, _ in outcome.headers):
            outcome.headers.append(retry_after_header(ctx.settings.retry_after))
        ctx.stats.page_answers[outcome.status] += 1
        ctx.out(Respond(txn, outcome.status, outcome.reason, outcome.headers))
