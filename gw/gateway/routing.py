"""Where a page-mode message goes when the key has no ready local session.

`route_page` (a procedure) refreshes a local session's deadline when due, or, one at
a time per key on this node (`Exclusive`), finds or makes the owned session: create the
record for a new key, forward to a live owner (ARCHITECTURE §4), or take a dead owner's
key over. The message then goes through `PageToMsrp.submit` like any other.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from gw.cluster.messages import Answer, BadRpc, Failed, PageMessage
from gw.cluster.rpc import NodeUnreachable
from gw.gateway import events as ev
from gw.gateway.commands import (
    Alive,
    Ask,
    AwaitOutcome,
    Exclusive,
    ForgetNode,
    Procedure,
    PublishNow,
    Refresh,
    ServerTxn,
    Sleep,
    StoreClaim,
    StoreCreateOrGet,
    StoreGet,
)
from gw.gateway.context import Context, log
from gw.gateway.lifecycle import Lifecycle
from gw.gateway.session import GwSession, Outcome, busy
from gw.gateway.settings import TOUCH_INTERVAL
from gw.gateway.setup import Setups
from gw.gateway.to_msrp import PageToMsrp
from gw.store.records import SessionRecord

__all__ = ["Routing"]


class Routing:
    def __init__(
        self, ctx: Context, to_msrp: PageToMsrp, setups: Setups, lifecycle: Lifecycle
    ) -> None:
        self.ctx = ctx
        self.to_msrp = to_msrp
        self.setups = setups
        self.lifecycle = lifecycle

    def answer_page(self, page: PageMessage, txn: ServerTxn, started: float) -> Procedure[None]:
        """The slow path of a MESSAGE this node received: route it, then answer it."""
        outcome = yield from self.route_page(page, started)
        self.to_msrp.answer(txn, started, outcome)

    def route_page(self, page: PageMessage, started: float | None = None) -> Procedure[Outcome]:
        """Deliver on the local session, forward to the owner, or take the key over."""
        if started is None:
            started = self.ctx.clock.perf()
        try:
            return (yield from self._route(page, started))
        except (RedisError, OSError) as exc:
            log.warning("store unavailable: %s", exc, extra={"key": page.key})
            self.ctx.stats.store_errors += 1
            return busy("Service Unavailable", self.ctx.settings.retry_after)

    def _route(self, page: PageMessage, started: float) -> Procedure[Outcome]:
        ctx = self.ctx
        session = ctx.table.get(page.key)
        if session is not None and not session.state.over:
            # Deadlines are hours away: one touch a second per session is exact enough
            # and keeps the store off the path of most MESSAGEs in a busy conversation.
            if ctx.clock.time() - session.touched_page >= TOUCH_INTERVAL:
                ok = yield Refresh(session, True, self.lifecycle.refresh(session, page=True))
                if not ok or ctx.table.get(page.key) is not session or session.state.over:
                    session = None
            if session is not None:
                return (yield from self.deliver(session, page, started))
        # Slower path, one at a time per key on this node: a concurrent MESSAGE or a forwarded
        # one must find the session this path creates, never start a second leg.
        found = yield Exclusive(page.key, self.own_or_route(page))
        if isinstance(found, Outcome):
            return found
        return (yield from self.deliver(found, page, started))

    def deliver(self, session: GwSession, page: PageMessage, started: float) -> Procedure[Outcome]:
        result = self.to_msrp.submit(session, page.body, page.content_type, page.call_id, started)
        if isinstance(result, Outcome):
            return result
        outcome: Outcome = yield AwaitOutcome(result)
        return outcome

    def own_or_route(self, page: PageMessage) -> Procedure[GwSession | Outcome]:
        """Find or make the owned session for the key, or forward to its live owner (run
        under the key's `Exclusive`, so never re-entering `route_page`)."""
        ctx = self.ctx
        me, key = ctx.me, page.key
        live = ctx.table.get(key)
        if (live is None or live.state.over) and ctx.destination_refused(page.ruri, key):
            return Outcome(403, "Destination Not Allowed")  # no INVITE to anyone's host
        for attempt in range(3):
            if attempt:
                yield Sleep(0.05)
            session = ctx.table.get(key)
            if session is not None and not session.state.over:
                return session  # made by the MESSAGE we waited for
            rec: SessionRecord | None
            if self.setups.at_capacity():  # no new session now: only look (forwarding is fine)
                rec = yield StoreGet(key)
                if rec is None:
                    return self.setups.refusal(key) or busy("Service Unavailable", 1)
            else:  # a new key is created in the same round trip that looks it up
                record = self.setups.new_record(page)
                self.setups.creating += 1
                try:
                    rec = yield StoreCreateOrGet(record)
                finally:
                    self.setups.creating -= 1
                if rec is None:
                    return self.setups.start(page, record, fresh=True)
                session = ctx.table.get(key)  # answered here while we looked (an INVITE)
                if session is not None and not session.state.over:
                    return session
            if rec.owner == me:
                if (refused := self.setups.refusal(key)) is not None:
                    return refused
                return self.setups.start(page, rec, fresh=False)  # ours in the store only
            if ctx.clustered and (yield Alive(rec.owner)):
                if page.hops >= 2:
                    return Outcome(503, "Session Owner Changing")
                outcome = yield from self.forward(rec.owner, page)
                if outcome is not None:
                    return outcome
                continue  # its inbox is gone: it is dying; look again
            if (refused := self.setups.refusal(key)) is not None:
                return refused
            claimed: SessionRecord | None = yield StoreClaim(key, rec.owner, me)
            if claimed is None:
                continue  # another node took it first: it is the owner now
            session = self.setups.start(page, claimed, fresh=False)  # forwards find it now
            log.info("session taken over from %s", rec.owner, extra={"key": key})
            ctx.stats.sessions_taken_over += 1
            yield PublishNow(
                ev.SESSION_MOVED,
                {"key": key, "from_node": rec.owner, "to_node": me, "reason": "owner dead"},
            )
            return session
        return busy("Session Owner Unreachable", 1)

    def forward(self, owner: str, page: PageMessage) -> Procedure[Outcome | None]:
        """Hand the MESSAGE to the owner node and answer with its outcome (ARCHITECTURE §4);
        None when nobody listens on the owner's inbox (it died: look again)."""
        stats = self.ctx.stats
        stats.forwarded_to_owner += 1
        try:
            reply = yield Ask(owner, page, self.lifecycle.forward_timeout)
        except NodeUnreachable:
            yield ForgetNode(owner)
            return None
        except TimeoutError:
            stats.forward_timeouts += 1
            return Outcome(408, "Owner Did Not Answer")
        except BadRpc:
            return Outcome(500, "Owner Failed")
        if isinstance(reply, Failed) and reply.retry:  # another release: soon upgraded too
            return busy("Owner Runs Another Release", self.ctx.settings.retry_after)
        if not isinstance(reply, Answer):
            return Outcome(500, "Owner Failed")
        return Outcome(reply.status, reply.reason, list(reply.headers))
