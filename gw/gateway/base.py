"""Shared state and helpers of the gateway engine (the parts every side uses)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from gw.cluster.registry import NodeRegistry
from gw.cluster.rpc import Rpc
from gw.gateway.policy import Policy
from gw.gateway.session import GwSession, Outcome
from gw.msrp.endpoint import MsrpEndpoint
from gw.sip.endpoint import IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response
from gw.sip.uri import SipSyntaxError
from gw.store.events import EventBus
from gw.store.sessions import SessionStore

log = logging.getLogger("gw.gateway")

TOUCH_INTERVAL = 1.0  # seconds between two deadline refreshes of one session, per side

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


class KeyLocks:
    """One asyncio lock per key, kept only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

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
        self._key_locks = KeyLocks()
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

    def _answer(self, incoming: IncomingRequest, outcome: Outcome) -> None:
        self.counters[f"page_answer_{outcome.status}"] += 1
        if not incoming.final_sent:
            incoming.respond(outcome.status, outcome.reason, headers=outcome.headers)

    def _fail_queue(self, session: GwSession, outcome: Outcome) -> None:
        while session.queue:
            pending = session.pop()
            if not pending.done.done():
                pending.done.set_result(outcome)

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
