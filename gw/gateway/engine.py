"""The asyncio adapter of the gateway core: `msg_to_msrp` and `msrp_gw_answer`, as in
OpenSIPS msrp_gateway, on real sockets and a real store.

It feeds gw.gateway.core.GatewayCore what happens (a SIP request, an MSRP event, a
timer, an RPC from a peer node) and carries out what the core asks: the effects it
leaves in its outbox, at once and in order (`_flush`), and the steps of its procedures,
awaited one by one (`_drive`). It holds no rule of its own; what it keeps is I/O
bookkeeping: tasks, timers, per-key locks, refreshes in flight, MESSAGE send order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, cast

from redis.exceptions import RedisError

from gw.cluster.messages import Answer, Ended, EndSession, RpcReply, RpcRequest
from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import NodeUnreachable, Rpc
from gw.gateway import commands as c
from gw.gateway.core import GatewayCore
from gw.gateway.legs import MsrpLegs
from gw.gateway.policy import Policy
from gw.gateway.session import GwSession, Pending
from gw.gateway.settings import ALLOW, Backlog, GatewaySettings
from gw.gateway.stats import GatewayStats
from gw.msrp.endpoint import MsrpEndpoint, MsrpSessionError
from gw.msrp.events import MessageReceived, SessionEvent
from gw.sip.endpoint import IncomingRequest, SipEndpoint
from gw.sip.message import LocalFailure, Request, Response
from gw.sip.transaction import build_response
from gw.sip.uri import NameAddr, SipSyntaxError, SipUri
from gw.store.events import EventBus
from gw.store.sessions import SessionStore

__all__ = ["ALLOW", "Gateway", "GatewaySettings"]

log = logging.getLogger("gw.gateway")


class EndpointRequests:
    """The core's request factory over the SIP endpoint (gw.gateway.context.SipRequests)."""

    def __init__(self, sip: SipEndpoint) -> None:
        self.sip = sip
        self._sent_by: tuple[tuple[Any, ...], frozenset[str]] | None = None

    def new_request(
        self,
        method: str,
        uri: SipUri | str,
        *,
        from_: NameAddr | str,
        to: NameAddr | str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
    ) -> Request:
        return self.sip.new_request(
            method,
            uri,
            from_=from_,
            to=to,
            body=body,
            content_type=content_type,
            headers=headers,
            max_forwards=max_forwards,
        )

    def contact(self) -> str:
        return str(self.sip.contact_uri("UDP"))

    def own_sent_by(self) -> frozenset[str]:
        local = tuple(self.sip.transports.local.items())
        cached = self._sent_by
        if cached is None or cached[0] != local:
            ours = frozenset(self.sip.host_for(t).strip("[]") + f":{a.port}" for t, a in local)
            cached = self._sent_by = (local, ours)
        return cached[1]


class KeyLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it (an idle
    key costs nothing)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Gateway:
    """One node's gateway: the core, and the I/O it asks for."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        sip: SipEndpoint,
        msrp: MsrpEndpoint,
        store: SessionStore,
        bus: EventBus,
        policy: Policy,
        registry: NodeRegistry | None = None,
        rpc: Rpc | None = None,
        forward_timeout: float = 12.0,
    ) -> None:
        settings.forward_timeout = forward_timeout
        settings.bye_timeout = 64 * sip.config.timers.t1
        self.sip = sip
        self.msrp = msrp
        self.store = store
        self.bus = bus
        self.policy = policy
        self.registry = registry
        self.rpc = rpc
        legs = MsrpLegs(msrp, settings)
        legs.sink = self._msrp_event  # one bound method, shared by every session
        self.core = GatewayCore(settings, sip=EndpointRequests(sip), legs=legs, policy=policy)
        self.core.ctx.clustered = registry is not None
        self.core.lifecycle.deadline_of = store.deadline
        self._locks = KeyLocks()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flushing = False
        self._flush_soon = False
        # MESSAGEs held behind one of their session's that waits to be sent (see _send_page)
        self._held: dict[GwSession, deque[c.SendPage]] = {}
        self._effects: dict[type, Callable[[Any], None]] = {
            c.Respond: self._respond,
            c.SendMsrp: self._send_msrp,
            c.ReportMsrp: self._report_msrp,
            c.CloseMsrp: lambda e: e.handle.close(e.reason),
            c.SendPage: self._send_page,
            c.StartTimer: self._start_timer,
            c.StopTimer: self._stop_timer,
            c.Wake: self._wake,
            c.Spawn: lambda e: self._start(e.procedure),
            c.Publish: lambda e: self._spawn(self._publish(e.name, e.data)),
            c.PauseInput: self._pause_input,
        }
        self._steps: dict[type, Callable[[Any], Awaitable[Any]]] = {
            c.StoreGet: lambda s: store.get(s.key),
            c.StoreCreate: lambda s: store.create(s.record),
            c.StoreCreateOrGet: lambda s: store.create_or_get(s.record),
            c.StoreUpdate: self._store_update,
            c.StoreDelete: lambda s: store.delete(s.key, owner=s.owner, sid=s.sid),
            c.StoreClaim: lambda s: store.claim(
                s.key, expected_owner=s.expected_owner, new_owner=s.new_owner
            ),
            c.StoreSids: lambda s: store.sids(s.keys),
            c.StoreTouch: lambda s: store.touch(s.key, page_message=s.page, now=s.now, sid=s.sid),
            c.StoreSweep: lambda s: store.expired_sweep(count=s.count),
            c.Alive: self._alive,
            c.ForgetNode: self._forget_node,
            c.Ask: self._ask,
            c.Invite: self._invite,
            c.Cancel: self._cancel,
            c.Bye: self._bye,
            c.Connect: lambda s: s.handle.connect(timeout=s.timeout),
            c.Sleep: lambda s: asyncio.sleep(s.seconds),
            c.PublishNow: lambda s: self._publish(s.name, s.data),
            c.Exclusive: self._exclusive,
            c.Refresh: self._refresh,
            c.DialogOf: self._dialog_of,
            c.AwaitOutcome: self._await_outcome,
        }

    # -- what the node sees ----------------------------------------------------------------

    @property
    def stats(self) -> GatewayStats:
        return self.core.ctx.stats

    @property
    def settings(self) -> GatewaySettings:
        return self.core.ctx.settings

    @property
    def sessions(self) -> Mapping[str, GwSession]:
        return self.core.ctx.table.by_key

    @property
    def draining(self) -> bool:
        return self.core.ctx.draining

    @property
    def pages_pending(self) -> int:
        """MESSAGEs sent for MSRP messages and not answered yet (flow control)."""
        return self.core.to_page.unanswered

    @property
    def setups_pending(self) -> int:
        return self.core.setups.pending

    @property
    def scan_count(self) -> int:
        return self.core.lifecycle.scan_count

    @scan_count.setter
    def scan_count(self, value: int) -> None:
        self.core.lifecycle.scan_count = value

    @property
    def on_latency(self) -> Callable[[str, float], None] | None:
        return self.core.ctx.on_latency

    @on_latency.setter
    def on_latency(self, value: Callable[[str, float], None] | None) -> None:
        self.core.ctx.on_latency = value

    def backlog(self) -> Backlog:
        return Backlog(
            len(self.core.to_msrp.sending),
            len(self._locks),
            self.core.setups.creating,
            sum(1 for t in self._tasks if not t.done()),
        )

    # -- what the core is fed --------------------------------------------------------------

    def handle(self, incoming: IncomingRequest) -> None:
        """The SIP endpoint's request handler: a MESSAGE on an established session is
        answered from its outcome's event, with no task."""
        self.core.request(incoming)
        self._flush()

    def _msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        """An MSRP message goes on to page mode at once. Other events come in bursts (one
        read holds many transaction responses, each settling a MESSAGE): their effects are
        carried out once per loop pass, so the burst's answers leave together (measured:
        8 us less CPU per MESSAGE -> SEND message at 16 in flight)."""
        self.core.msrp_event(session, event)
        if type(event) is MessageReceived:
            self._flush()
        elif not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush_later)

    def _flush_later(self) -> None:
        self._flush_soon = False
        self._flush()

    async def on_rpc(self, request: RpcRequest) -> RpcReply:
        """Requests from other nodes: forwarded MESSAGEs and session ends."""
        if isinstance(request, EndSession):
            # The key is free once the owner forgot the session: the asker (a new INVITE
            # replacing it) does not wait for the BYE too.
            ended = self.core.end_session(request.key, request.reason, wait_bye=False)
            return Ended(await self._drive(ended))
        request.hops += 1
        outcome = await self._drive(self.core.routing.route_page(request))
        return Answer(outcome.status, outcome.reason, outcome.headers)

    async def end_session(self, key: str, reason: str) -> bool:
        ended: bool = await self._drive(self.core.end_session(key, reason))
        return ended

    async def on_expired(self, key: str) -> None:
        await self._drive(self.core.expired(key))

    async def sweep(self) -> None:
        await self._drive(self.core.sweep())

    async def drain(self) -> None:
        await self._drive(self.core.drain())

    # -- effects ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Carry out the core's effects in order. An effect that feeds the core again (an
        MSRP refusal at once) appends to the same list, handled in this loop; the list is
        emptied in place, not copied (no allocation per call)."""
        if self._flushing:
            return
        effects = self.core.ctx.outbox.effects
        if not effects:
            return
        self._flushing = True
        run = self._effects
        i = 0
        try:
            while i < len(effects):
                effect = effects[i]
                i += 1
                run[type(effect)](effect)
        finally:
            del effects[:i]
            self._flushing = False

    def _respond(self, e: c.Respond) -> None:
        txn: IncomingRequest = e.to  # type: ignore[assignment]  # what this adapter fed it
        if not txn.final_sent:
            txn.respond(
                e.status, e.reason, headers=e.headers, body=e.body, content_type=e.content_type
            )

    def _send_msrp(self, e: c.SendMsrp) -> None:
        try:
            msg = e.handle.send_nowait(
                e.body, e.content_type, success_report=e.success_report, message_id=e.message_id
            )
        except (MsrpSessionError, ValueError) as exc:
            self.core.to_msrp.send_refused(e.session, e.message_id, getattr(exc, "code", 413))
            return
        if msg.outcome is not None:  # refused at once (closed, too big, type)
            self.core.to_msrp.outcome(e.session, msg.outcome)

    def _report_msrp(self, e: c.ReportMsrp) -> None:
        if e.code == 200:
            e.handle.report_success(e.message_id)
        else:
            e.handle.report_failure(e.message_id, e.code, e.reason)

    def _send_page(self, e: c.SendPage) -> None:
        """MESSAGEs leave in order: one that must be awaited before it is sent (a name to
        resolve, TCP for its size) holds its session's later ones until it is handed to
        its transport."""
        ticket = e.ticket
        if ticket is None:
            self._spawn(self.sip.request(e.request))
            return
        held = self._held.get(ticket.session)
        if held is not None:
            held.append(e)
            return
        fut = self.sip.request_nowait(e.request)
        if fut is None:
            self._held[ticket.session] = deque()
            self._spawn(self._send_page_later(e, ticket))
            return
        fut.add_done_callback(functools.partial(self._page_answered, ticket))

    async def _send_page_later(self, e: c.SendPage, ticket: c.PageTicket) -> None:
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            held = self._held.pop(ticket.session, None)
            for later in held or ():
                self._send_page(later)

        response: Response | None = None
        try:
            response = await self.sip.request(e.request, on_sent=release)
        finally:
            release()
            self.core.to_page.answered(ticket, response)
            self._flush()

    def _page_answered(self, ticket: c.PageTicket, fut: asyncio.Future[Response]) -> None:
        self.core.to_page.answered(ticket, None if fut.cancelled() else fut.result())
        self._flush()

    def _start_timer(self, e: c.StartTimer) -> None:
        loop = asyncio.get_running_loop()
        e.pending.timer = loop.call_later(e.delay, self._timer_fired, e.pending, e.session)

    def _stop_timer(self, e: c.StopTimer) -> None:
        timer = e.pending.timer  # uvloop's handles are no asyncio.TimerHandle: no isinstance
        if timer is not None:
            cast(asyncio.Handle, timer).cancel()
        e.pending.timer = None

    def _timer_fired(self, pending: Pending, session: GwSession) -> None:
        pending.timer = None
        self.core.delivery_timeout(pending, session)
        self._flush()

    def _wake(self, e: c.Wake) -> None:
        waiter = cast("asyncio.Future[Any] | None", e.pending.waiter)
        if waiter is not None and not waiter.done():
            waiter.set_result(e.pending.outcome)

    def _pause_input(self, e: c.PauseInput) -> None:
        if e.paused:
            self.msrp.pause_input()
        else:
            self.msrp.resume_input()

    # -- procedures ------------------------------------------------------------------------

    def _start(self, procedure: c.Procedure[Any]) -> None:
        self._spawn(self._drive(procedure))

    async def _drive(self, procedure: c.Procedure[Any]) -> Any:
        """Run a procedure: carry out each step it yields and feed the result back (or
        throw the step's exception in); its effects are carried out after each step."""
        value: Any = None
        error: BaseException | None = None
        steps = self._steps
        while True:
            try:
                step = procedure.throw(error) if error is not None else procedure.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                self._flush()
            error = None
            try:
                value = await steps[type(step)](step)
            except asyncio.CancelledError:
                procedure.close()
                raise
            except Exception as exc:  # fed to the procedure, which decides
                error = exc

    async def _exclusive(self, step: c.Exclusive) -> Any:
        async with self._locks.hold(step.key):
            return await self._drive(step.procedure)

    async def _refresh(self, step: c.Refresh) -> Any:
        """One refresh at a time per session and side: a second waits for the first (its
        replies could come back in another order on pooled connections, and messages
        would then go out in another order). Waiters resume in arrival order."""
        session = step.session
        inflight = cast(
            "asyncio.Future[None] | None", session.touching if step.page else session.touching_msrp
        )
        if inflight is not None:
            step.procedure.close()
            await asyncio.shield(inflight)
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if step.page:
            session.touching = fut
        else:
            session.touching_msrp = fut
        try:
            return await self._drive(step.procedure)
        except (RedisError, OSError) as exc:
            fut.set_exception(exc)  # the waiters fail like this one
            fut.exception()  # retrieved: no "never retrieved" log without waiters
            raise
        finally:
            if step.page:
                session.touching = None
            else:
                session.touching_msrp = None
            if not fut.done():
                fut.set_result(None)

    async def _dialog_of(self, step: c.DialogOf) -> Any:
        return step.txn.dialog

    async def _await_outcome(self, step: c.AwaitOutcome) -> Any:
        pending = step.pending
        if pending.outcome is not None:
            return pending.outcome
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        pending.waiter = fut
        try:
            return await fut
        finally:
            pending.waiter = None

    async def _alive(self, step: c.Alive) -> bool:
        return self.registry is not None and await self.registry.alive(step.node)

    async def _forget_node(self, step: c.ForgetNode) -> None:
        if self.registry is not None:
            self.registry.forget(step.node)

    async def _ask(self, step: c.Ask) -> RpcReply:
        if self.rpc is None:
            raise NodeUnreachable(step.node)
        return await self.rpc.ask(step.node, step.request, step.timeout)

    async def _invite(self, step: c.Invite) -> tuple[Response, Any]:
        """INVITE; if no final answer within the timeout, CANCEL and take what comes (§9.1)."""
        invite = step.request
        task = asyncio.ensure_future(self.sip.invite(invite))
        done, _ = await asyncio.wait({task}, timeout=step.timeout)
        if not done:
            with contextlib.suppress(Exception):
                await self.sip.cancel(invite)
            done, _ = await asyncio.wait({task}, timeout=64 * self.sip.config.timers.t1)
            if not done:
                task.cancel()
                return _timed_out(invite), None
            response, dialog = task.result()
            if dialog is not None:  # answered while we cancelled: hang up
                await self.sip.bye(dialog)
                dialog = None
            if response.status == 487 or response.status < 300:
                return _timed_out(invite), None
            return response, None
        result: tuple[Response, Any] = task.result()
        return result

    async def _cancel(self, step: c.Cancel) -> None:
        with contextlib.suppress(Exception):
            await self.sip.cancel(step.invite)

    async def _bye(self, step: c.Bye) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.sip.bye(step.dialog), self.settings.bye_timeout)

    async def _store_update(self, step: c.StoreUpdate) -> bool:
        if step.event is None:
            return await self.store.update_session(step.key, step.sid, step.fields)
        bus = self.bus
        payload = bus.payload(*step.event)
        return await self.store.update_session(
            step.key, step.sid, step.fields, bus.channel, payload
        )

    async def _publish(self, name: str, data: dict[str, Any]) -> None:
        try:
            await self.bus.publish(name, data)
        except (RedisError, OSError) as exc:
            log.warning("cannot publish %s: %s", name, exc)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("gateway task failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # -- tracing and listing (management) --------------------------------------------------

    @property
    def traced(self) -> set[str]:
        return self.core.ctx.table.traced

    def set_trace(self, key: str, on: bool) -> None:
        self.core.ctx.table.set_trace(key, on)

    def traces_sip(self, message: Request | Response) -> bool:
        """Whether a SIP message belongs to a traced session (only called while tracing)."""
        table = self.core.ctx.table
        try:
            call_id = message.call_id
        except SipSyntaxError:
            return False
        if call_id in table.trace_call_ids:
            return True
        if isinstance(message, Request) and message.method in ("MESSAGE", "INVITE"):
            with contextlib.suppress(SipSyntaxError, ValueError):
                if self.policy.decide(message).key in table.traced:
                    table.trace_call_ids.add(call_id)
                    return True
        return False

    def traced_msrp_ids(self) -> list[bytes]:
        ids = []
        for key in self.traced:
            session = self.sessions.get(key)
            if session is not None and session.msrp is not None:
                sid = session.msrp.local_uri.session_id
                if sid:
                    ids.append(sid.encode())
        return ids

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


def _timed_out(request: Request) -> Response:
    response = build_response(request, 408, "Request Timeout")
    response.local = LocalFailure.TIMEOUT
    return response
