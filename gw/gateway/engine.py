"""The translation engine: `msg_to_msrp` and `msrp_gw_answer`, as in OpenSIPS msrp_gateway.

A node owns the sessions whose INVITE dialog and MSRP connection it holds; their
shared view is the Redis hash (gw.store). Page-mode MESSAGEs are answered with
the truth about delivery (reply_mode "confirm") or 202 at once ("accept").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import NodeUnreachable, Rpc
from gw.gateway import events as ev
from gw.gateway.mapping import msrp_to_sip, sip_to_msrp
from gw.gateway.policy import ANSWER, MSG_TO_MSRP, OPTIONS, Decision, Policy
from gw.gateway.session import ACTIVE, ENDING, SETUP, GwSession, Outcome, PageMessage, Pending
from gw.msrp.endpoint import MsrpEndpoint, MsrpSessionError
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    ReportIgnored,
    RequestRejected,
    SessionClosed,
    SessionEvent,
)
from gw.sip.endpoint import IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response
from gw.sip.sdp import (
    SdpError,
    answer_setup,
    build_msrp_answer,
    build_msrp_offer,
    find_msrp_media,
    mime_matches,
    negotiate_types,
    parse_sdp,
    we_connect,
)
from gw.sip.uri import NameAddr, SipSyntaxError, parse_name_addr
from gw.store.events import EventBus
from gw.store.records import SessionRecord
from gw.store.sessions import SessionNotFound, SessionStore

__all__ = ["Gateway", "GatewaySettings"]

log = logging.getLogger("gw.gateway")

LOOP_HEADER = "X-Msrp-Gw"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"


@dataclass
class GatewaySettings:
    node_id: str
    content_types: list[str]
    accept_wrapped_types: list[str] = field(default_factory=list)
    reply_mode: str = "confirm"
    delivery_timeout: float = 10.0
    setup_timeout: float = 8.0
    require_success_report: bool = False
    max_queued_messages: int = 64
    max_queued_bytes: int = 1 << 20
    max_page_message_size: int = 65536
    retry_after: int = 5
    msrp_setup: str = "active"
    failure_notice: str = ""
    chunk_size: int = 2048
    msrp_transaction_timeout: float = 30.0


class Gateway:
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
        self.settings = settings
        self.sip = sip
        self.msrp = msrp
        self.store = store
        self.bus = bus
        self.policy = policy
        self.registry = registry
        self.rpc = rpc
        # The owner answers within its delivery timeout; wait a little longer than that.
        self.forward_timeout = max(forward_timeout, settings.delivery_timeout + 1.0)
        self._creating: dict[str, asyncio.Future[None]] = {}
        # Per-session trace switch (config gateway.trace_keys, MI msrp_gw_trace).
        self.traced: set[str] = set()
        self.on_latency: Callable[[str, float], None] | None = None
        self.trace_call_ids: set[str] = set()
        self.scan_count = 1000
        self.sessions: dict[str, GwSession] = {}
        self.by_call_id: dict[str, GwSession] = {}
        self.counters: Counter[str] = Counter()
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- entry point ---------------------------------------------------------------
    async def handle(self, incoming: IncomingRequest) -> None:
        """The SIP endpoint's request handler."""
        request = incoming.request
        method = request.method
        if method == "ACK":
            return
        if incoming.dialog is not None or request.to.tag is not None:
            await self._in_dialog(incoming)
            return
        if method == "CANCEL":
            return  # answered by the endpoint
        if request.get(LOOP_HEADER) is not None or self._own_via(request):
            self._reject(incoming, 482, "Loop Detected", "loop")
            return
        decision = self.policy.decide(request)
        if decision.action == OPTIONS:
            incoming.respond(200, headers=[("Allow", ALLOW), ("Accept", "*/*")])
        elif decision.action == MSG_TO_MSRP and method == "MESSAGE":
            await self.msg_to_msrp(incoming, decision)
        elif decision.action == ANSWER and method == "INVITE":
            await self.msrp_gw_answer(incoming, decision)
        else:
            code = decision.code or 405
            headers = list(decision.headers)
            if code == 405:
                headers.append(("Allow", ALLOW))
            self._reject(incoming, code, decision.reason or "Not Allowed", "policy", headers)

    def _own_via(self, request: Request) -> bool:
        """A request we sent that a proxy routed back to us carries our own Via below the top."""
        ours = {
            self.sip.host_for(t).strip("[]") + f":{a.port}"
            for t, a in self.sip.transports.local.items()
        }
        try:
            vias = request.vias[1:]
        except SipSyntaxError:
            return False
        return any(v.sent_by in ours and (v.branch or "").startswith("z9hG4bK") for v in vias)

    def _reject(
        self,
        incoming: IncomingRequest,
        code: int,
        reason: str,
        why: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.counters[f"rejected_{code}"] += 1
        log.info(
            "rejected %s with %d %s (%s)",
            incoming.request.method,
            code,
            reason,
            why,
            extra={"call_id": incoming.request.get("Call-ID") or ""},
        )
        if not incoming.final_sent:
            incoming.respond(code, reason, headers=headers or [])

    def _unavailable(self, incoming: IncomingRequest, why: str) -> None:
        self._reject(
            incoming,
            503,
            "Service Unavailable",
            why,
            [("Retry-After", str(self.settings.retry_after))],
        )

    # -- page mode -> session mode -----------------------------------------------------
    async def msg_to_msrp(self, incoming: IncomingRequest, decision: Decision) -> None:
        request = incoming.request
        ctype = request.content_type
        if not ctype:
            self._reject(incoming, 400, "Missing Content-Type", "bad message")
            return
        if not request.body:
            self._reject(incoming, 400, "Empty Message Body", "bad message")
            return
        types = decision.content_types or self.settings.content_types
        if not mime_matches(ctype, types):
            self._reject(
                incoming,
                415,
                "Unsupported Media Type",
                "content type",
                [("Accept", ", ".join(types))],
            )
            return
        if self.draining:
            self._unavailable(incoming, "draining")
            return
        started = time.perf_counter()
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
        outcome = await self.route_page(page)
        if self.on_latency is not None:
            self.on_latency("page_to_msrp", time.perf_counter() - started)
        if outcome.status == 503 and not any(h == "Retry-After" for h, _ in outcome.headers):
            outcome.headers.append(("Retry-After", str(self.settings.retry_after)))
        self._answer(incoming, outcome)

    async def route_page(self, page: PageMessage) -> Outcome:
        """Deliver on the local session, forward to the owner, or take the key over."""
        try:
            return await self._route_page(page)
        except (RedisError, OSError) as exc:
            log.warning("store unavailable: %s", exc, extra={"key": page.key})
            self.counters["store_errors"] += 1
            return Outcome(
                503, "Service Unavailable", [("Retry-After", str(self.settings.retry_after))]
            )

    async def _route_page(self, page: PageMessage) -> Outcome:
        me = self.settings.node_id
        key = page.key
        creating = self._creating.get(key)
        if creating is not None:
            await asyncio.shield(creating)
        session = self.sessions.get(key)
        if session is not None and session.state != ENDING:
            try:
                await self.store.touch(key, page_message=True, now=time.time())
            except SessionNotFound:
                # Redis lost it (restart without persistence): we hold the live session.
                if not await self._rebuild(session):
                    session = None
            if session is not None:
                return await self._deliver_local(session, page)
        rec = await self.store.get(key)
        if rec is not None and rec.owner != me:
            if self.registry is not None and await self.registry.alive(rec.owner):
                return await self._forward(rec.owner, page)
            claimed = await self.store.claim(key, expected_owner=rec.owner, new_owner=me)
            if claimed is None:  # another node took it first: it is the owner now
                rec2 = await self.store.get(key)
                if rec2 is not None and rec2.owner != me and page.hops < 2:
                    return await self._forward(rec2.owner, page)
                return Outcome(503, "Session Owner Changing")
            log.info("session taken over from %s", rec.owner, extra={"key": key})
            self.counters["sessions_taken_over"] += 1
            await self._publish(
                ev.SESSION_MOVED,
                {"key": key, "from_node": rec.owner, "to_node": me, "reason": "owner dead"},
            )
            session = self._start_outbound(page, claimed)
        elif rec is not None:
            session = self._start_outbound(page, rec)  # ours in Redis, but not in this process
        else:
            session = await self._create_outbound(page)
            if session is None:  # lost a creation race: route to the winner
                if page.hops >= 2:
                    return Outcome(503, "Session Create Race")
                page.hops += 1
                return await self._route_page(page)
        return await self._deliver_local(session, page)

    async def _deliver_local(self, session: GwSession, page: PageMessage) -> Outcome:
        if (
            session.state == ACTIVE
            and session.peer_types
            and not mime_matches(page.content_type, session.peer_types)
        ):
            self.counters["rejected_415"] += 1
            return Outcome(
                415, "Unsupported Media Type", [("Accept", ", ".join(session.peer_types))]
            )
        s = self.settings
        if (
            len(session.queue) >= s.max_queued_messages
            or session.queued_bytes + len(page.body) > s.max_queued_bytes
        ):
            self.counters["queue_full"] += 1
            return Outcome(503, "Queue Full", [("Retry-After", str(s.retry_after))])
        loop = asyncio.get_running_loop()
        pending = Pending(page.body, page.content_type, loop.create_future(), page.call_id)
        session.enqueue(pending)
        self.counters["page_messages_in"] += 1
        if session.state == ACTIVE:
            self._flush(session)
        if s.reply_mode == "accept":
            self._spawn(self._await_for_event(session, pending))
            return Outcome(202, "Accepted")
        try:
            return await asyncio.wait_for(asyncio.shield(pending.done), s.delivery_timeout)
        except TimeoutError:
            outcome = Outcome(408, "Delivery Timeout")
            with contextlib.suppress(ValueError):
                session.queue.remove(pending)
                session.queued_bytes -= pending.size
            if not pending.done.done():
                pending.done.set_result(outcome)
            return outcome

    async def _forward(self, owner: str, page: PageMessage) -> Outcome:
        """Hand the MESSAGE to the owner node and answer with its outcome (ARCHITECTURE §4)."""
        if self.rpc is None:
            return Outcome(503, "Session Owned Elsewhere")
        self.counters["forwarded_to_owner"] += 1
        payload = {"op": "message", **page.to_wire()}
        try:
            reply = await self.rpc.call(owner, payload, self.forward_timeout)
        except NodeUnreachable:
            if self.registry is not None:
                self.registry.forget(owner)
            if page.hops >= 2:
                return Outcome(503, "Session Owner Unreachable")
            page.hops += 1
            await asyncio.sleep(0.05)
            if self.registry is not None and not await self.registry.alive(owner):
                return await self._route_page(page)
            return Outcome(503, "Session Owner Unreachable")
        except TimeoutError:
            self.counters["forward_timeouts"] += 1
            return Outcome(408, "Owner Did Not Answer")
        if "error" in reply:
            return Outcome(500, "Owner Failed")
        headers = [(str(h), str(v)) for h, v in reply.get("headers", [])]
        return Outcome(int(reply.get("status", 500)), str(reply.get("reason", "")), headers)

    async def on_rpc(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Requests from other nodes: forwarded MESSAGEs and session ends."""
        op = msg.get("op")
        if op == "message":
            page = PageMessage.from_wire(msg)
            page.hops += 1
            outcome = await self.route_page(page)
            return {"status": outcome.status, "reason": outcome.reason, "headers": outcome.headers}
        if op == "end":
            ok = await self.end_session(str(msg.get("key")), str(msg.get("reason", "mi")))
            return {"ok": ok}
        return {"error": f"unknown op {op!r}"}

    def _answer(self, incoming: IncomingRequest, outcome: Outcome) -> None:
        self.counters[f"page_answer_{outcome.status}"] += 1
        if not incoming.final_sent:
            incoming.respond(outcome.status, outcome.reason, headers=outcome.headers)

    async def _await_for_event(self, session: GwSession, pending: Pending) -> None:
        outcome = await pending.done
        if outcome.status >= 300:
            self.counters[f"page_answer_{outcome.status}"] += 1
            await self._publish(
                ev.DELIVERY_FAILED,
                {
                    "key": session.key,
                    "direction": "page_to_msrp",
                    "code": outcome.status,
                    "reason": outcome.reason,
                },
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
        page.mirror_into(record)
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
            page.mirror_into(record)
            record.state = "setup"
            record.origin = "msg_to_msrp"
            record.content_types = list(page.content_types or self.settings.content_types)
        session = GwSession(key=page.key, origin="msg_to_msrp", record=record)
        self.sessions[page.key] = session
        session.trace = page.key in self.traced
        self.counters["sessions_created_msg_to_msrp"] += 1
        session.setup_task = asyncio.create_task(self._setup(session, page, fresh))
        self._tasks.add(session.setup_task)
        session.setup_task.add_done_callback(self._tasks.discard)
        return session

    async def _setup(self, session: GwSession, page: PageMessage, fresh: bool) -> None:
        s = self.settings

        local_uri = self.msrp.new_local_uri()
        setup = None if s.msrp_setup == "none" else s.msrp_setup
        offer = build_msrp_offer(
            address=self.msrp.advertised_host,
            port=self.msrp.uri.port or 2855,
            path=[str(local_uri)],
            accept_types=session.record.content_types,
            accept_wrapped_types=s.accept_wrapped_types,
            setup=setup,
        )
        invite = self.sip.new_request(
            "INVITE",
            page.ruri,
            from_=page.page_from,
            to=page.page_to,
            body=offer.to_bytes(),
            content_type="application/sdp",
            headers=[("Contact", f"<{self.sip.contact_uri('UDP')}>"), (LOOP_HEADER, s.node_id)],
        )
        session.invite = invite
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
            if response.get("X-Gw-Local") is None and response.status >= 300:
                # The event reports a negative reply only; after a 2xx (MSRP leg failed) or
                # with no reply at all its code and reason are null (reference semantics).
                code, reason = response.status, response.reason
            if dialog is None:
                status = response.status if response.status >= 300 else 500
                if response.get("X-Gw-Local") == "timeout" or status == 487:
                    status = 408
                raise _SetupFailed(status, response.reason if code else "No Answer From MSRP Side")
            session.dialog = dialog
            await self._start_msrp_leg(session, response, local_uri, setup)
        except _SetupFailed as exc:
            await self._setup_failed(session, exc.status, exc.reason, code, reason)
            return
        except (RedisError, OSError) as exc:
            await self._setup_failed(session, 503, f"Store Error: {exc}", None, None)
            return
        session.state = ACTIVE
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
        session.peer_types = list(media.accept_types)
        handle = self.msrp.create_session(
            media.path,
            local_uri=local_uri,
            role="active" if active else "passive",
            accept_types=session.record.content_types,
            on_event=lambda e: self._msrp_event(session, e),
            peer_accept_types=media.accept_types or None,
            peer_max_size=media.max_size,
            chunk_size=self.settings.chunk_size,
            # what the MSRP user sends here becomes MESSAGEs too: same limit as answered
            max_message_size=self.settings.max_page_message_size,
            transaction_timeout=self.settings.msrp_transaction_timeout,
        )
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
        self.counters[f"setup_failed_{status}"] += 1
        log.info("session setup failed: %d %s", status, reason, extra={"key": session.key})
        rec = session.record
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
        outcome = Outcome(status, reason)
        self._fail_queue(session, outcome)
        await self._forget(session, "setup failed")
        if self.settings.failure_notice:
            self._spawn(self._failure_notice(rec, status, reason))

    async def _failure_notice(self, rec: SessionRecord, status: int, reason: str) -> None:
        text = self.settings.failure_notice.format(code=status, reason=reason, key=rec.key)
        req = self.sip.new_request(
            "MESSAGE",
            rec.msg_ruri,
            from_=parse_name_addr(f"<{rec.msg_from}>"),
            to=parse_name_addr(f"<{rec.msg_to}>"),
            body=text.encode(),
            content_type="text/plain",
            headers=[(LOOP_HEADER, self.settings.node_id)],
        )
        await self.sip.request(req)

    def _fail_queue(self, session: GwSession, outcome: Outcome) -> None:
        while session.queue:
            pending = session.pop()
            if not pending.done.done():
                pending.done.set_result(outcome)

    def _flush(self, session: GwSession) -> None:
        """Hand queued messages to the MSRP session in order; outcomes resolve their futures."""
        handle = session.msrp
        if handle is None or session.state != ACTIVE:
            return
        while session.queue:
            pending = session.pop()
            if pending.done.done():
                continue
            try:
                msg = handle.send_nowait(
                    pending.body,
                    pending.content_type,
                    success_report=True if self.settings.require_success_report else None,
                )
            except (MsrpSessionError, ValueError) as exc:
                code = getattr(exc, "code", 413)
                pending.done.set_result(self._send_failed(session, code))
                continue
            self._spawn(self._track(session, handle, msg, pending))

    @staticmethod
    def _send_failed(session: GwSession, code: int) -> Outcome:
        """The MESSAGE's answer for a failed SEND; a 415 says what the peer accepts."""
        outcome = Outcome(*msrp_to_sip(code))
        if outcome.status == 415 and session.peer_types:
            outcome.headers.append(("Accept", ", ".join(session.peer_types)))
        return outcome

    async def _track(
        self, session: GwSession, handle: MsrpHandle, msg: Any, pending: Pending
    ) -> None:
        result = await handle.outcome(msg)
        if isinstance(result, MessageDelivered):
            outcome = Outcome(200, "OK")
            self.counters["page_to_msrp_delivered"] += 1
        elif isinstance(result, MessageFailed):
            outcome = self._send_failed(session, result.code)
            self.counters[f"page_to_msrp_failed_{result.code}"] += 1
        else:
            outcome = Outcome(480, "MSRP Message Aborted")
        if outcome.status >= 300:
            log.info(
                "message to MSRP failed: %s -> %d %s",
                getattr(result, "code", "aborted"),
                outcome.status,
                outcome.reason,
                extra={"key": session.key, "call_id": pending.call_id},
            )
        if not pending.done.done():
            pending.done.set_result(outcome)

    # -- session mode -> page mode -------------------------------------------------------
    async def msrp_gw_answer(self, incoming: IncomingRequest, decision: Decision) -> None:
        request = incoming.request
        if self.draining:
            self._unavailable(incoming, "draining")
            return
        try:
            media = find_msrp_media(parse_sdp(request.body))
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
        role = "passive"
        if setup is not None:
            role = "active" if setup == "active" else "passive"
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
        session = GwSession(key=decision.key, origin="answer", record=record, state=ACTIVE)
        session.peer_types = list(media.accept_types)
        handle = self.msrp.create_session(
            media.path,
            local_uri=local_uri,
            role=role,
            accept_types=types,
            on_event=lambda e: self._msrp_event(session, e),
            peer_accept_types=media.accept_types or None,
            peer_max_size=media.max_size,
            chunk_size=self.settings.chunk_size,
            max_message_size=self.settings.max_page_message_size,
            transaction_timeout=self.settings.msrp_transaction_timeout,
        )
        session.msrp = handle
        self.sessions[decision.key] = session
        session.trace = decision.key in self.traced
        self._note_trace_ids(session)
        self.by_call_id[request.call_id] = session
        self.counters["sessions_created_answer"] += 1
        answer = build_msrp_answer(
            media,
            address=self.msrp.advertised_host,
            port=self.msrp.uri.port or 2855,
            path=[str(local_uri)],
            accept_types=types,
            accept_wrapped_types=self.settings.accept_wrapped_types,
            setup=setup,
            offer_sdp=parse_sdp(request.body),
        )
        incoming.respond(200, body=answer.to_bytes(), content_type="application/sdp")
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
        assert session.msrp is not None
        try:
            await session.msrp.connect(timeout=self.settings.setup_timeout)
        except (MsrpSessionError, TimeoutError, OSError) as exc:
            log.info("cannot connect to MSRP peer: %s", exc, extra={"key": session.key})
            await self.end_session(session.key, "msrp connect failed")

    def _msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        if isinstance(event, MessageReceived):
            self._spawn(self._to_page(session, event))
        elif isinstance(event, RequestRejected):
            self.counters[f"msrp_rejected_{event.code}"] += 1
            log.info(
                "msrp request rejected: %d %s", event.code, event.reason, extra={"key": session.key}
            )
        elif isinstance(event, ReportIgnored):
            self.counters["msrp_reports_ignored"] += 1
            log.info(
                "msrp REPORT ignored: %s %s (%s)",
                event.message_id,
                event.status,
                event.reason,
                extra={"key": session.key},
            )
        elif isinstance(event, SessionClosed) and session.state == ACTIVE:
            # While setting up, the setup task handles a failed MSRP leg (precise answer).
            if session.msrp is not None and not session.msrp.closed:
                return  # an MSRP session a re-INVITE replaced closed, not the current one
            log.info("msrp session closed: %s", event.reason, extra={"key": session.key})
            self._spawn(self.end_session(session.key, f"msrp closed: {event.reason}"))

    async def _to_page(self, session: GwSession, msg: MessageReceived) -> None:
        rec = session.record
        handle = session.msrp
        self.counters["msrp_messages_in"] += 1
        try:
            await self.store.touch(session.key, page_message=False, now=time.time())
        except SessionNotFound:
            with contextlib.suppress(RedisError, OSError):
                await self._rebuild(session)
        except (RedisError, OSError):
            self.counters["store_errors"] += (
                1  # the message still goes out: Redis is not in its path
            )
        try:
            req = self.sip.new_request(
                "MESSAGE",
                rec.msg_ruri,
                from_=parse_name_addr(f"<{rec.msg_from}>"),
                to=parse_name_addr(f"<{rec.msg_to}>"),
                body=msg.body,
                content_type=msg.content_type,
                headers=[(LOOP_HEADER, self.settings.node_id)],
            )
        except SipSyntaxError as exc:
            log.warning("bad MESSAGE coordinates: %s", exc, extra={"key": session.key})
            if handle is not None:
                handle.report_failure(msg.message_id, 403, "Bad Coordinates")
            return
        if session.trace:
            self.trace_call_ids.add(req.call_id)
        started = time.perf_counter()
        response = await self.sip.request(req)
        if self.on_latency is not None:
            self.on_latency("msrp_to_page", time.perf_counter() - started)
        delivered = 200 <= response.status < 300
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
            self.counters["msrp_to_page_delivered"] += 1
            if handle is not None and msg.success_report:
                handle.report_success(msg.message_id)
            return
        self.counters[f"msrp_to_page_failed_{response.status}"] += 1
        code, reason = sip_to_msrp(response.status)
        await self._publish(
            ev.DELIVERY_FAILED,
            {
                "key": session.key,
                "direction": "msrp_to_page",
                "code": response.status,
                "reason": response.reason,
            },
        )
        if handle is not None and msg.failure_report != "no":
            handle.report_failure(msg.message_id, code, reason)

    # -- in-dialog requests -------------------------------------------------------------------
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
            media = find_msrp_media(parse_sdp(request.body)) if request.body else None
        except SdpError:
            media = None
        if media is None or session.msrp is None:
            incoming.respond(488, "Not Acceptable Here")
            return
        types = negotiate_types(media.accept_types, session.record.content_types)
        if not types:
            incoming.respond(488, "No Acceptable Content Type")
            return
        old = session.msrp
        setup = answer_setup(media.setup) if media.setup else None
        role = "active" if setup == "active" else "passive"
        local_uri = old.local_uri
        if [str(u) for u in old.peer_path] != list(media.path):
            session.msrp = self.msrp.create_session(
                media.path,
                local_uri=self.msrp.new_local_uri(),
                role=role,
                accept_types=types,
                on_event=lambda e: self._msrp_event(session, e),
                peer_accept_types=media.accept_types or None,
                peer_max_size=media.max_size,
                chunk_size=self.settings.chunk_size,
                max_message_size=self.settings.max_page_message_size,
                transaction_timeout=self.settings.msrp_transaction_timeout,
            )
            # Closed after the swap: its SessionClosed must not end the session (_msrp_event).
            old.close("re-INVITE")
            local_uri = session.msrp.local_uri
        session.peer_types = list(media.accept_types)
        answer = build_msrp_answer(
            media,
            address=self.msrp.advertised_host,
            port=self.msrp.uri.port or 2855,
            path=[str(local_uri)],
            accept_types=types,
            setup=setup,
            offer_sdp=parse_sdp(request.body),
        )
        incoming.respond(200, body=answer.to_bytes(), content_type="application/sdp")
        with contextlib.suppress(RedisError, OSError):
            await self.store.update(
                session.key, peer_path=list(media.path), local_path=[str(local_uri)]
            )
        if role == "active" and session.msrp is not old:
            self._spawn(self._connect_answered(session))

    # -- ending ---------------------------------------------------------------------------------
    async def end_session(self, key: str, reason: str, *, send_bye: bool = True) -> bool:
        session = self.sessions.get(key)
        if session is None:
            rec = await self.store.get(key)  # a store error propagates: "unavailable", not 404
            if rec is None:
                return False
            if await self._owner_elsewhere(rec.owner):
                assert self.rpc is not None
                # The owner holds the dialog and the MSRP connection: it sends the BYE.
                with contextlib.suppress(NodeUnreachable, TimeoutError):
                    reply = await self.rpc.call(
                        rec.owner,
                        {"op": "end", "key": key, "reason": reason},
                        self.forward_timeout,
                    )
                    return bool(reply.get("ok"))
            # Owner dead (or we own a record without live state): clean up the record.
            if not await self.store.delete(key, owner=rec.owner):
                return False
            log.info("session ended: %s (owner %s gone)", reason, rec.owner, extra={"key": key})
            await self._publish(
                ev.SESSION_ENDED,
                {"key": key, "reason": reason, "origin": rec.origin, "owner": rec.owner},
            )
            return True
        if session.state == ENDING:
            return True
        was_setup = session.state == SETUP
        session.state = ENDING
        self._fail_queue(session, Outcome(480, "Session Ended"))
        if was_setup and session.invite is not None and session.dialog is None:
            with contextlib.suppress(Exception):
                await self.sip.cancel(session.invite)
        if send_bye:
            await self._bye(session)
        await self._forget(session, reason)
        return True

    async def _owner_elsewhere(self, owner: str) -> bool:
        """True when another live node owns it (so it must do the work)."""
        if owner == self.settings.node_id or self.rpc is None or self.registry is None:
            return False
        return await self.registry.alive(owner)

    async def _bye(self, session: GwSession) -> None:
        dialog = session.dialog
        session.dialog = None
        if dialog is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.sip.bye(dialog), 64 * self.sip.config.timers.t1)

    async def _forget(self, session: GwSession, reason: str) -> None:
        session.state = ENDING
        if session.msrp is not None:
            session.msrp.close(reason)
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        for call_id in [c for c, s in self.by_call_id.items() if s is session]:
            del self.by_call_id[call_id]
        with contextlib.suppress(RedisError, OSError):
            await self.store.delete(session.key, owner=self.settings.node_id)
        self.counters[f"sessions_ended_{reason.split(':')[0].replace(' ', '_')}"] += 1
        log.info("session ended: %s", reason, extra={"key": session.key})
        await self._publish(
            ev.SESSION_ENDED, {"key": session.key, "reason": reason, "origin": session.origin}
        )

    async def _rebuild(self, session: GwSession) -> bool:
        """Re-create the record of a live session Redis lost; if another node created the
        key meanwhile, that one wins and ours ends cleanly (BYE)."""
        rec = session.record
        rec.owner = self.settings.node_id
        rec.state = "active" if session.state == ACTIVE else "setup"
        if session.dialog is not None:
            d = session.dialog
            rec.call_id, rec.local_tag, rec.remote_tag = d.call_id, d.local_tag, d.remote_tag
        if session.msrp is not None:
            rec.local_path = [str(session.msrp.local_uri)]
            rec.peer_path = [str(u) for u in session.msrp.peer_path]
        rec.created = rec.created or time.time()
        rec.last_message = rec.last_send = time.time()
        if await self.store.create(rec):
            self.counters["sessions_rebuilt"] += 1
            log.info("session record rebuilt from live state", extra={"key": session.key})
            return True
        await self.end_session(session.key, "superseded")
        return False

    async def reconcile(self) -> None:
        """Rebuild records of live sessions that Redis lost (restart, failover, flush)."""
        keys = [k for k, s in self.sessions.items() if s.state == ACTIVE]
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            async with self.store.redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.exists(self.store.keys.session(key))
                found = await pipe.execute()
            for key, exists in zip(batch, found, strict=True):
                session = self.sessions.get(key)
                if not exists and session is not None and session.state == ACTIVE:
                    await self._rebuild(session)

    async def on_expired(self, key: str) -> None:
        """The session's deadline passed (keyspace notification or sweep)."""
        try:
            rec = await self.store.get(key)
        except (RedisError, OSError):
            return
        if rec is None:
            return
        if self.store.deadline(rec) > time.time() + 0.5:
            return  # touched meanwhile: a new deadline is armed
        if rec.owner != self.settings.node_id and key not in self.sessions:
            # Its owner ends it; when the owner is dead, the first node to see it does.
            alive = self.registry is None or await self.registry.alive(rec.owner)
            if alive:
                return
        with contextlib.suppress(RedisError, OSError):
            await self.end_session(key, "expired")

    async def sweep(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            for key in await self.store.expired_sweep(count=self.scan_count):
                await self.on_expired(key)
            await self.reconcile()

    async def drain(self) -> None:
        """SIGTERM: take no new work, end what we own with BYE."""
        self.draining = True
        for key in list(self.sessions):
            await self.end_session(key, "shutdown")

    # -- tracing ------------------------------------------------------------------------------
    def set_trace(self, key: str, on: bool) -> None:
        if on:
            self.traced.add(key)
        else:
            self.traced.discard(key)
            if not self.traced:
                self.trace_call_ids.clear()
        session = self.sessions.get(key)
        if session is not None:
            session.trace = on
            self._note_trace_ids(session)

    def _note_trace_ids(self, session: GwSession) -> None:
        if session.key not in self.traced or len(self.trace_call_ids) > 10000:
            return
        if session.invite is not None:
            self.trace_call_ids.add(session.invite.call_id)
        if session.dialog is not None:
            self.trace_call_ids.add(session.dialog.call_id)

    def traces_sip(self, message: Request | Response) -> bool:
        """Whether a SIP message belongs to a traced session (only called while tracing)."""
        try:
            call_id = message.call_id
        except SipSyntaxError:
            return False
        if call_id in self.trace_call_ids:
            return True
        if isinstance(message, Request) and message.method in ("MESSAGE", "INVITE"):
            with contextlib.suppress(SipSyntaxError, ValueError):
                if self.policy.decide(message).key in self.traced:
                    self.trace_call_ids.add(call_id)
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

    # -- management -------------------------------------------------------------------------
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
                    "state": local.state if local else rec.state,
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
                    "queued": len(local.queue) if local else None,
                }
            )
        return out

    async def _publish(self, name: str, data: dict[str, Any]) -> None:
        try:
            await self.bus.publish(name, data)
        except (RedisError, OSError) as exc:
            log.warning("cannot publish %s: %s", name, exc)

    def _spawn(self, coro: Any) -> None:
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


class _SetupFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _synthetic(request: Request, status: int, reason: str) -> Response:
    from gw.sip.transaction import build_response

    response = build_response(request, status, reason)
    response.add("X-Gw-Local", "timeout")
    return response
