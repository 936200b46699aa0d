"""Shared state and helpers of the gateway engine (the parts every side uses)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from redis.exceptions import RedisError

from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import Rpc
from gw.gateway.legs import MsrpLegs
from gw.gateway.loops import Hops, Onward, onward
from gw.gateway.policy import Policy
from gw.gateway.rules import Limits, Refusal, failed_answer, msrp_outcome_answer
from gw.gateway.session import GwSession, Outcome, Pending, retry_after_header
from gw.gateway.stats import Direction, GatewayStats
from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.events import MessageDelivered, MessageFailed, SessionEvent
from gw.msrp.events import Outcome as MsrpOutcome
from gw.sip.endpoint import IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response
from gw.sip.uri import NameAddr, SipSyntaxError, SipUri, parse_name_addr, parse_uri
from gw.store.events import EventBus
from gw.store.records import SessionRecord
from gw.store.sessions import SessionStore

log = logging.getLogger("gw.gateway")

TOUCH_INTERVAL = 1.0  # seconds between two deadline refreshes of one session, per side

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"

# Parsed page-mode coordinates kept for the busiest sessions (see GatewayBase.coordinates).
COORDS_CACHE = 1024


class Coordinates(NamedTuple):
    """Where a session's MESSAGEs to the page-mode user go, parsed for `new_request`."""

    ruri: SipUri
    from_: NameAddr
    to: NameAddr


ReplyMode = Literal["confirm", "accept"]  # 2xx after delivery, or 202 at once
SetupMode = Literal["actpass", "active", "passive", "none"]  # our offer's a=setup


@dataclass
class GatewaySettings:
    node_id: str
    content_types: list[str]
    deployment: str = ""  # loop detection identity (gw.gateway.loops); "": node_id
    accept_wrapped_types: list[str] = field(default_factory=list)
    reply_mode: ReplyMode = "confirm"
    delivery_timeout: float = 10.0
    setup_timeout: float = 8.0
    require_success_report: bool = False
    max_queued_messages: int = 64
    max_pending_setups: int = 256
    max_pending_messages: int = 1000
    max_queued_bytes: int = 1 << 20
    max_page_message_size: int = 65536
    retry_after: int = 5
    msrp_setup: SetupMode = "active"
    failure_notice: str = ""
    chunk_size: int = 2048
    msrp_transaction_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work this node holds in flight: what an idle node must have none of (tests, ops)."""

    messages_to_msrp: int  # page-mode messages sent on MSRP, outcome not known yet
    key_locks: int  # keys whose slow path (set-up, takeover, forwarding) is running
    creating: int  # session records being created
    tasks: int  # gateway tasks not finished


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


class GatewayBase:
    """One node's gateway state; page.py, answer.py and lifecycle.py add behaviour."""

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
        self.setups_pending = 0  # msg_to_msrp set-ups in progress (max_pending_setups)
        self._refusal_logged = -1e9  # monotonic time of the last "refusing" log line
        self.pages_pending = 0  # MESSAGEs sent for MSRP messages, not answered yet
        self._key_locks = KeyLocks()
        # Per-session trace switch (config gateway.trace_keys, MI msrp_gw_trace).
        self.traced: set[str] = set()
        self.on_latency: Callable[[str, float], None] | None = None
        self.trace_call_ids: set[str] = set()
        self.scan_count = 1000
        self.sessions: dict[str, GwSession] = {}
        self.by_call_id: dict[str, GwSession] = {}
        self.stats = GatewayStats()
        self.draining = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Page-mode messages on the MSRP side, by MSRP Message-ID, until their outcome event.
        self._sending: dict[str, Pending] = {}
        # Parsed coordinates of the sessions that send MESSAGEs most recently: parsed once
        # per busy session, while an idle session keeps only its three strings (1.7 KB less).
        self.coords_cache_size = COORDS_CACHE
        self._coords: OrderedDict[tuple[str, str, str], Coordinates] = OrderedDict()
        self._types: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._own_sent_by: tuple[tuple[Any, ...], frozenset[str]] | None = None
        self.deployment = settings.deployment or settings.node_id
        self.legs = MsrpLegs(msrp, settings)
        self.limits = Limits(
            settings.max_queued_messages, settings.max_queued_bytes, settings.retry_after
        )
        self._sink = self._msrp_event  # one bound method, shared by every session

    def _msrp_event(self, session: GwSession, event: SessionEvent) -> None:
        raise NotImplementedError  # answer.py

    def backlog(self) -> Backlog:
        return Backlog(
            len(self._sending),
            len(self._key_locks),
            len(self._creating),
            sum(1 for t in self._tasks if not t.done()),
        )

    def coordinates(self, msg_from: str, msg_to: str, msg_ruri: str) -> Coordinates:
        """The parsed From/To/R-URI of MESSAGEs to the page-mode user (SipSyntaxError).

        A small LRU: a session sending MESSAGEs parses its coordinates once, and idle
        sessions do not keep the parsed objects (about 1.7 KB each) around."""
        key = (msg_from, msg_to, msg_ruri)
        cache = self._coords
        coords = cache.get(key)
        if coords is not None:
            cache.move_to_end(key)
            return coords
        to = parse_name_addr(f"<{msg_to}>")
        ruri = to.uri if msg_ruri == msg_to else parse_uri(msg_ruri)
        coords = Coordinates(ruri, parse_name_addr(f"<{msg_from}>"), to)
        cache[key] = coords
        if len(cache) > self.coords_cache_size:
            cache.popitem(last=False)
        return coords

    def types(self, values: Sequence[str]) -> tuple[str, ...]:
        """An interned tuple of content types: sessions share one per distinct list."""
        key = tuple(values)
        found = self._types.get(key)
        if found is None:
            if len(self._types) >= 256:
                return key
            found = self._types[key] = tuple(sys.intern(v) for v in key)
        return found

    def onward(self, rec: SessionRecord) -> Onward:
        """Marks and Max-Forwards of what we send for the session `rec` (gw.gateway.loops)."""
        return onward(Hops(tuple(rec.marks), rec.max_forwards), self.deployment)

    def _own_via(self, request: Request) -> bool:
        """A request we sent that a proxy routed back to us carries our own Via below the top."""
        try:
            vias = request.vias[1:]
        except SipSyntaxError:
            return False
        if not vias:
            return False
        local = tuple(self.sip.transports.local.items())
        cached = self._own_sent_by
        if cached is None or cached[0] != local:
            ours = frozenset(self.sip.host_for(t).strip("[]") + f":{a.port}" for t, a in local)
            cached = self._own_sent_by = (local, ours)
        ours = cached[1]
        return any(v.sent_by in ours and (v.branch or "").startswith("z9hG4bK") for v in vias)

    def _reject(
        self,
        incoming: IncomingRequest,
        code: int,
        reason: str,
        why: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.stats.rejected[code] += 1
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

    def _refuse(self, incoming: IncomingRequest, refusal: Refusal) -> None:
        o = refusal.outcome
        self._reject(incoming, o.status, o.reason, refusal.why, o.headers)

    def _unavailable(self, incoming: IncomingRequest, why: str) -> None:
        self._reject(
            incoming,
            503,
            "Service Unavailable",
            why,
            [retry_after_header(self.settings.retry_after)],
        )

    def _answer(self, incoming: IncomingRequest, outcome: Outcome) -> None:
        self.stats.page_answers[outcome.status] += 1
        if not incoming.final_sent:
            incoming.respond(outcome.status, outcome.reason, headers=outcome.headers)

    @staticmethod
    def _send_failed(session: GwSession, code: int) -> Outcome:
        """The MESSAGE's answer for a failed SEND; a 415 says what the peer accepts."""
        return failed_answer(code, session.peer_types)

    def _msrp_outcome(self, session: GwSession, result: MsrpOutcome) -> None:
        """The MSRP side's outcome of a page-mode message (its MESSAGE's answer)."""
        pending = self._sending.pop(result.message_id, None)
        if pending is None:
            return  # not one of ours (or settled when it was refused at once)
        outcome = msrp_outcome_answer(result, session.peer_types)
        if isinstance(result, MessageDelivered):
            self.stats.delivered[Direction.PAGE_TO_MSRP] += 1
        elif isinstance(result, MessageFailed):
            self.stats.failed[Direction.PAGE_TO_MSRP][result.code] += 1
        if outcome.status >= 300:
            log.info(
                "message to MSRP failed: %s -> %d %s",
                getattr(result, "code", "aborted"),
                outcome.status,
                outcome.reason,
                extra={"key": session.key, "call_id": pending.call_id},
            )
        pending.settle(outcome)

    def _fail_queue(self, session: GwSession, outcome: Outcome) -> None:
        while (pending := session.pop()) is not None:
            pending.settle(outcome)

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
        if session.call_id:
            self.trace_call_ids.add(session.call_id)
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
