"""Asyncio adapter for MSRP over TCP and TLS: listener, connections, session handles.

Thin by design: each socket drives one `MsrpConnection` core (bytes, time and
one timer handle in, bytes and events out); `Session` wraps one `MsrpSession`
core with awaitable sends and an event queue. Connections we open are reused
for every session whose first hop has the same authority (RFC 4975 §6 via the
To-Path's first URI; RFC 6135: only the active side can reuse, because only it
knows where a connection leads). The passive side binds sessions to whatever
inbound connection their first request arrives on.

With `use_relay` (RFC 4976) one outbound connection is AUTHed at a relay and
kept open: the relay delivers to us only over it, so every relayed session is
carried on it, advertising Use-Path + its URI and sending to Use-Path + peer path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, cast

from gw.msrp.chunks import ReassemblyBudget
from gw.msrp.connection import (
    AlternateConnection,
    ConnectionEvent,
    MsrpConnection,
    SessionBound,
    SessionMoved,
    SessionTable,
)
from gw.msrp.events import (
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    Outcome,
    RequestRejected,
    SessionClosed,
    SessionEvent,
)
from gw.msrp.frame import Frame, FrameError
from gw.msrp.outgoing import OutgoingMessage
from gw.msrp.relay import AuthFailed, RelayAuthError, RelayClient, RelayEvent
from gw.msrp.session import MsrpSession, to_path
from gw.msrp.uri import MsrpUri, new_session_id, parse_msrp_uri

__all__ = ["DEFAULT_PORT", "Link", "MsrpEndpoint", "MsrpSessionError", "Session"]

log = logging.getLogger("gw.msrp.endpoint")

DEFAULT_PORT = 2855
_ROLES = ("active", "passive")
_OUTCOMES = (MessageDelivered, MessageFailed, MessageAborted)
_Key = tuple[str, str, int, str]


def _key(uri: MsrpUri) -> _Key:
    """Connection-reuse key: the first hop's authority and transport."""
    return (uri.scheme, uri.host.lower(), uri.port or DEFAULT_PORT, uri.transport.lower())


class MsrpSessionError(Exception):
    """A session could not be set up (no connection, or the peer refused it)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class Link(asyncio.Protocol):
    """One TCP/TLS connection driving one `MsrpConnection` core.

    Output is coalesced: `kick` only marks the link dirty and schedules one `_flush`
    (write what the core has, hand its events out, re-arm its timer) for the next
    pass of the event loop, however many sends, responses and reports asked for it in
    this one. Frames leave in the core's order, in as few writes as possible. Input is
    handed out at once: events of received data do not wait for the flush.
    """

    def __init__(
        self, endpoint: MsrpEndpoint, *, outbound: bool, key: _Key | None, keep_open: bool = False
    ) -> None:
        self.endpoint = endpoint
        self.outbound = outbound
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.core = MsrpConnection(
            endpoint.table,
            now=self.loop.time(),
            outbound=outbound,
            idle_timeout=endpoint.idle_timeout,
            max_chunk_size=endpoint.max_chunk_size,
            keep_open=keep_open,
        )
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = self.loop.create_future()
        self._paused = False
        self._dirty = False  # a _flush is scheduled
        self._peername: Any = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._relay: _RelayBinding | None = None

    @property
    def peername(self) -> Any:
        return self._peername

    @property
    def keep_open(self) -> bool:
        """Survive the idle timeout and the end of the last session (a relay
        grant is tied to this connection); `close` still closes it."""
        return self.core.keep_open

    @keep_open.setter
    def keep_open(self, value: bool) -> None:
        self.core.keep_open = value
        self.kick()  # re-arm the timer: the idle deadline counts again, or no longer

    def close(self, reason: str = "closed locally") -> None:
        """Close after writing what is pending; sessions on it end with 408."""
        if self._relay is not None:
            self._relay.stop()
        self.core.close(reason)
        self.kick()

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._peername = transport.get_extra_info("peername")
        self.endpoint._links.add(self)
        if self.endpoint.input_paused:
            self.set_reading(False)
        self.kick()

    def set_reading(self, on: bool) -> None:
        """Pause or resume reading (MsrpEndpoint.pause_input); no-op once closing."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError):  # already in that state
                if on:
                    transport.resume_reading()
                else:
                    transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        tracer = self.endpoint.tracer
        if tracer is not None:
            tracer("in", data, self._peername)
        self.core.receive_data(data, self.loop.time())
        self._dispatch()
        self.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        adopters = self.core.connection_lost(None if exc is None else f"connection lost: {exc}")
        self._dispatch()
        if adopters:
            for link in self.endpoint.connections:
                if link.core in adopters:
                    link.kick()
        if self._relay is not None:
            self._relay.lost()
        self.endpoint._link_gone(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.kick()

    # -- driving the core ----------------------------------------------------------
    def kick(self) -> None:
        """Have the core's output written, its events handed out and its timer re-armed,
        once, in the next pass of the event loop (see the class docstring)."""
        if self._dirty or self.transport is None or self.lost.done():
            return  # scheduled already; or connection_made will; or nothing left to do
        self._dirty = True
        self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._dirty = False
        transport = self.transport
        if transport is None or self.lost.done():
            return
        core = self.core
        now = self.loop.time()
        while core.has_output() and not self._paused and not transport.is_closing():
            data = core.data_to_send(now)
            if not data:
                break
            tracer = self.endpoint.tracer
            if tracer is not None:
                tracer("out", data, self._peername)
            transport.write(data)
        self._dispatch()
        if core.closed:
            transport.close()
            return
        # The timer may go off early (a transaction answered, its deadline gone): that
        # costs one spurious `on_timer`, and saves a cancel and re-arm per message.
        # It never goes off late: an earlier deadline re-arms it.
        deadline = core.next_deadline()
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self.core.on_timer(self.loop.time())
        self.kick()

    def _dispatch(self) -> None:
        core = self.core
        if not core.has_events():
            return
        for event in core.events():
            self.endpoint._connection_event(self, event)
        handles = self.endpoint._handles
        for session in core.touched():
            handle = handles.get(session.session_id)
            if handle is None:
                continue
            if session.connection is not core and session.has_outgoing():
                handle._wake()  # handled on an alternate: its bound link may have output
            else:
                handle._pump()


class _RelayBinding:
    """Runs a `RelayClient` on a `Link`. AUTH answers are claimed before the core
    routes responses, AUTHs go out between whole frames, refreshes run on a loop
    timer. A failed AUTH or refresh closes the link: without a grant the relay
    delivers nothing to us, so its sessions had better end now than time out."""

    def __init__(
        self, link: Link, client: RelayClient, on_event: Callable[[RelayEvent], None] | None
    ) -> None:
        self.link = link
        self.client = client
        self.on_event = on_event
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[asyncio.Future[RelayEvent]] = []
        self._gone = False
        link._relay = self
        link.core.response_hook = self._claim

    @property
    def up(self) -> bool:
        return self.client.authenticated and not self.link.core.closed

    def start(self) -> asyncio.Future[RelayEvent]:
        """Send the first AUTH; the future gets the grant or the failure."""
        fut: asyncio.Future[RelayEvent] = self.link.loop.create_future()
        self._waiters.append(fut)
        self.client.start(self.link.loop.time())
        self._flush()
        self.link.kick()
        return fut

    def release(self) -> None:
        """No longer the endpoint's relay: close once the last session is gone."""
        self.link.keep_open = False
        if not self.link.core.sessions:
            self.link.close()

    def stop(self) -> None:
        self.client.close()
        self._cancel_timer()
        self._settle(AuthFailed(None, "relay link closed"))

    def lost(self) -> None:
        self._gone = True
        self._cancel_timer()
        self._dispatch(self.client.connection_lost())
        self._settle(AuthFailed(None, "relay connection lost"))

    def _claim(self, item: Frame | FrameError) -> bool:
        if not self.client.handles(item):
            return False
        if isinstance(item, FrameError):
            events = self.client.receive_unreadable(item.tid, item.reason)
        else:
            events = self.client.receive(item, self.link.loop.time())
        self._flush()  # the core is mid-receive: the link kicks afterwards
        self._dispatch(events)
        return True

    def _fire(self) -> None:
        self._timer = None
        events = self.client.on_timer(self.link.loop.time())
        self._flush()
        self._dispatch(events)
        self.link.kick()

    def _flush(self) -> None:
        for frame in self.client.frames_to_send():
            self.link.core.queue_frame(frame)
        self._cancel_timer()
        loop = self.link.loop
        deadline = self.client.next_refresh(loop.time())
        if deadline is not None and not self._gone:
            self._timer = loop.call_at(deadline, self._fire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _settle(self, event: RelayEvent) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(event)

    def _dispatch(self, events: list[RelayEvent]) -> None:
        for event in events:
            log.info("msrp relay %s: %s", self.client.relay_uri, event)
            self._settle(event)
            if isinstance(event, AuthFailed):
                self.link.endpoint.stats["relay_auth_failed"] += 1
                if not self._gone:
                    self.link.close(f"relay AUTH failed: {event.status} {event.reason}")
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception:  # a callback bug must not break the connection
                    log.exception("msrp relay %s: on_event failed", self.client.relay_uri)


class Session:
    """Asyncio handle of one MSRP session; create it with `MsrpEndpoint.create_session`.

    Its event queue, outcome waiters and bind event are created when first needed:
    with an `on_event` callback (the gateway's way) and no one waiting, an idle
    session holds none of them.
    """

    __slots__ = (
        "_bound",
        "_internal",
        "_on_event",
        "_queue",
        "_relay",
        "_waiters",
        "core",
        "endpoint",
        "link",
        "role",
        "use_path",
    )

    def __init__(
        self,
        endpoint: MsrpEndpoint,
        core: MsrpSession,
        role: str,
        on_event: Callable[[SessionEvent], None] | None,
        relay: _RelayBinding | None = None,
        use_path: tuple[MsrpUri, ...] = (),
    ) -> None:
        self.endpoint = endpoint
        self.core = core
        self.role = role
        self.use_path = use_path  # our relay's Use-Path when created: fixed for its life
        self.link: Link | None = None
        self._relay = relay
        self._on_event = on_event
        self._queue: asyncio.Queue[SessionEvent] | None = None  # without on_event
        self._waiters: dict[str, asyncio.Future[Outcome]] | None = None
        self._internal: set[str] | None = None  # our own empty SENDs: outcomes not surfaced
        self._bound: asyncio.Event | None = None  # a passive `connect` waiting

    @property
    def local_uri(self) -> MsrpUri:
        return self.core.local_uri

    @property
    def peer_path(self) -> tuple[MsrpUri, ...]:
        """The peer's a=path (without our relay's Use-Path)."""
        return self.core.peer_path[len(self.use_path) :]

    @property
    def local_path(self) -> tuple[MsrpUri, ...]:
        """Our a=path for SDP: the relay's Use-Path, if relayed, then our URI."""
        return (*self.use_path, self.core.local_uri)

    @property
    def lean(self) -> bool:
        """Whether neither the handle nor its core holds per-message state (no event queue,
        waiter, pending bind or internal message; see `MsrpSession.lean`)."""
        return (
            self._queue is None
            and self._bound is None
            and self._waiters is None
            and self._internal is None
            and self.core.lean
        )

    @property
    def relayed(self) -> bool:
        return self._relay is not None

    @property
    def closed(self) -> bool:
        return self.core.closed

    async def connect(self, timeout: float = 30.0) -> None:
        """Active: open (or reuse) a connection to the first hop and send the empty
        SEND (§5.4), returning once the peer accepted it; a relayed session uses
        the relay connection, never a fresh unauthenticated one. Passive: wait
        until the peer's first request binds us. MsrpSessionError / TimeoutError."""
        if self.core.closed:
            raise MsrpSessionError(481, "session closed")
        if self.core.connection is None and self.role == "passive":
            if self._bound is None:
                self._bound = asyncio.Event()
            await asyncio.wait_for(self._bound.wait(), timeout)
            return
        if self.core.connection is not None:
            return
        if self._relay is not None:
            if not self._relay.up:
                raise MsrpSessionError(408, f"relay link down: {self._relay.client.state.value}")
            link = self._relay.link
        else:
            try:
                link = await self.endpoint._outbound_link(self.core.peer_path[0], timeout)
            except (OSError, TimeoutError) as exc:
                raise MsrpSessionError(408, f"cannot connect: {exc!r}") from exc
        if self.core.connection is not None or self.core.closed:
            return  # bound meanwhile by an inbound request, or closed
        empty = link.core.attach(self.core, link.loop.time())
        self._bind(link)
        link.kick()  # the empty SEND, or the queued message that binds instead (§5.4)
        if empty is not None:
            if self._internal is None:
                self._internal = set()
            self._internal.add(empty.message_id)
            outcome = await asyncio.wait_for(self._outcome(empty), timeout)
            if isinstance(outcome, MessageFailed):
                raise MsrpSessionError(outcome.code, outcome.reason)

    def send_nowait(
        self,
        body: bytes | memoryview,
        content_type: str,
        *,
        success_report: bool | None = None,
        failure_report: str = "yes",
        message_id: str | None = None,
    ) -> OutgoingMessage:
        """Queue a message; its outcome comes as an event (and from `outcome`)."""
        msg = self.core.send_message(
            body,
            content_type,
            success_report=success_report,
            failure_report=failure_report,
            message_id=message_id,
            now=asyncio.get_running_loop().time(),
        )
        self._wake()
        return msg

    async def send(
        self,
        body: bytes | memoryview,
        content_type: str,
        *,
        success_report: bool | None = None,
        failure_report: str = "yes",
        message_id: str | None = None,
    ) -> Outcome:
        """Send a message and wait for its outcome (delivered, failed, aborted)."""
        msg = self.send_nowait(
            body,
            content_type,
            success_report=success_report,
            failure_report=failure_report,
            message_id=message_id,
        )
        return await self._outcome(msg)

    async def outcome(self, message: OutgoingMessage) -> Outcome:
        """Wait for the outcome of a message queued with `send_nowait`."""
        return await self._outcome(message)

    def abort(self, message: OutgoingMessage) -> bool:
        done = self.core.abort(message)
        self._wake()
        return done

    def report_success(self, message_id: str) -> bool:
        done = self.core.report_success(message_id)
        self._wake()
        return done

    def report_failure(self, message_id: str, code: int, reason: str | None = None) -> bool:
        done = self.core.report_failure(message_id, code, reason)
        self._wake()
        return done

    async def next_event(self) -> SessionEvent:
        return await self._event_queue().get()

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Events until (and including) `SessionClosed`."""
        queue = self._event_queue()
        while True:
            event = await queue.get()
            yield event
            if isinstance(event, SessionClosed):
                return

    def close(self, reason: str = "closed") -> None:
        """End the session: pending messages fail (481), aborts are flushed, and a
        connection we opened is closed once no session uses it (unless keep-open)."""
        self.core.close(reason)
        self._wake()
        link = self.link
        if link is not None and self.core.connection is link.core:
            link.core.detach(self.core, link.loop.time())
            if link.outbound and not link.core.sessions and not link.keep_open:
                link.core.close("no session left")
            link.kick()  # closes, or arms the idle timer of an inbound connection
        self._pump()

    # -- internals -----------------------------------------------------------------
    def _event_queue(self) -> asyncio.Queue[SessionEvent]:
        if self._queue is None:
            self._queue = asyncio.Queue()
        return self._queue

    def _bind(self, link: Link) -> None:
        self.link = link
        if self._bound is not None:
            self._bound.set()

    def _wake(self) -> None:
        link = self.link
        if link is not None and self.core.connection is link.core:
            link.core.wake(self.core)
            link.kick()
        self._pump()

    def _outcome(self, msg: OutgoingMessage) -> asyncio.Future[Outcome]:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if msg.outcome is not None:
            fut.set_result(msg.outcome)
        elif self._waiters is None:
            self._waiters = {msg.message_id: fut}
        else:
            self._waiters[msg.message_id] = fut
        return fut

    def _pump(self) -> None:
        for event in self.core.events():
            if isinstance(event, _OUTCOMES):
                waiters = self._waiters
                if waiters is not None:
                    fut = waiters.pop(event.message_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(event)
                    if not waiters:
                        self._waiters = None
                internal = self._internal
                if internal is not None and event.message_id in internal:
                    internal.discard(event.message_id)
                    if not internal:
                        self._internal = None
                    continue
            if isinstance(event, SessionClosed):
                self.endpoint._forget(self)
            if self._on_event is not None:
                self._on_event(event)
            else:
                self._event_queue().put_nowait(event)


class MsrpEndpoint:
    """Our MSRP side: one listener (TCP, or TLS for msrps), sessions, connections."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        advertised_host: str | None = None,
        ssl_server: _ssl.SSLContext | None = None,
        ssl_client: _ssl.SSLContext | None = None,
        idle_timeout: float = 30.0,
        max_chunk_size: int = 1 << 20,
        max_reassembly_bytes: int = 64 << 20,
        on_event: Callable[[ConnectionEvent], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        self.ssl_server = ssl_server
        self.ssl_client = ssl_client
        self.idle_timeout = idle_timeout
        self.max_chunk_size = max_chunk_size
        # Bytes of incomplete incoming messages, all sessions together (413 beyond it).
        self.reassembly = ReassemblyBudget(max_reassembly_bytes)
        self.on_event = on_event
        # Per-session tracing (ops): called with ("in"|"out", raw bytes, peer) when set.
        self.tracer: Callable[[str, bytes, Any], None] | None = None
        self.table = SessionTable()
        self.stats: Counter[str] = Counter()
        self._uri: MsrpUri | None = None
        self._server: asyncio.Server | None = None
        self._links: set[Link] = set()
        self._outbound: dict[_Key, Link] = {}
        self._connecting: dict[_Key, asyncio.Task[Link]] = {}
        self._handles: dict[str, Session] = {}
        self._relay: _RelayBinding | None = None
        self._relay_lock = asyncio.Lock()
        # A relay is configured (the node's msrp.relay): sessions go through it by default,
        # and fail with 503 (not ValueError) until `use_relay` has succeeded.
        self.relay_required = False
        self.input_paused = False  # pause_input: no connection is read from

    @property
    def uri(self) -> MsrpUri:
        """Our URI without session-id (`msrp[s]://host:port;tcp`); after `start`."""
        if self._uri is None:
            raise RuntimeError("endpoint not started")
        return self._uri

    @property
    def connections(self) -> list[Link]:
        return list(self._links)

    def pause_input(self) -> None:
        """Stop reading from every connection, new ones included, until `resume_input`:
        TCP flow control pushes back on the senders (the user is overloaded)."""
        self._set_input(paused=True)

    def resume_input(self) -> None:
        self._set_input(paused=False)

    def _set_input(self, *, paused: bool) -> None:
        if self.input_paused != paused:
            self.input_paused = paused
            for link in self._links:
                link.set_reading(not paused)

    @property
    def relay(self) -> RelayClient | None:
        """The client `use_relay` set up (state, use_path, expires), or None."""
        return None if self._relay is None else self._relay.client

    @property
    def relay_link(self) -> Link | None:
        """The connection AUTHed at the relay (closed if the relay is down)."""
        return None if self._relay is None else self._relay.link

    @property
    def use_path(self) -> tuple[MsrpUri, ...]:
        """The relay's current Use-Path; () without a relay or while it is down."""
        return self._relay.client.use_path if self._relay is not None else ()

    def local_path(
        self, local_uri: MsrpUri, *, via_relay: bool | None = None
    ) -> tuple[MsrpUri, ...]:
        """Our a=path for a session URI, before the session exists (SDP offer):
        Use-Path + `local_uri` when relayed (see `create_session`), else `local_uri`."""
        relay = self._relay_for(via_relay)
        return (local_uri,) if relay is None else (*relay.client.use_path, local_uri)

    async def use_relay(
        self,
        relay_uri: MsrpUri | str,
        username: str,
        password: str,
        expires: int | None = None,
        *,
        timeout: float = 30.0,
        on_event: Callable[[RelayEvent], None] | None = None,
    ) -> list[MsrpUri]:
        """Connect to an RFC 4976 relay (msrps: over TLS), AUTH, and return its Use-Path.

        The relay delivers to us only on the connection we AUTHed on, so that
        connection is kept open (`Link.keep_open`), its grant refreshed before
        Expires, and it carries every session created afterwards (unless
        `via_relay=False`). Grants and failures go to `on_event`; a failed
        refresh or a lost connection ends the relayed sessions, and relayed
        `create_session` then fails with 503 until `use_relay` succeeds again.
        Calling it again replaces the relay; the old connection closes after its
        last session. RelayAuthError, OSError or TimeoutError on failure.
        """
        uri = relay_uri if isinstance(relay_uri, MsrpUri) else parse_msrp_uri(relay_uri)
        client = RelayClient(uri, self.uri, username, password, expires)
        async with self._relay_lock:
            link = await asyncio.wait_for(self._connect(_key(uri), uri, keep_open=True), timeout)
            binding = _RelayBinding(link, client, on_event)
            try:
                event = await asyncio.wait_for(binding.start(), timeout)
            except BaseException:
                link.close()
                raise
            if isinstance(event, AuthFailed):
                link.close()
                raise RelayAuthError(event)
            old, self._relay = self._relay, binding
            link.key = _key(event.use_path[0])  # sessions sent to the relay reuse this link
            self._outbound[link.key] = link
            if old is not None and old.link is not link:
                old.release()
            return list(event.use_path)

    async def close_relay(self) -> None:
        """Stop using the relay: its connection closes and the sessions on it end."""
        binding, self._relay = self._relay, None
        if binding is not None:
            binding.link.close()
            await asyncio.wait([binding.link.lost], timeout=5.0)

    async def start(self) -> MsrpUri:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Link(self, outbound=False, key=None),
            self.host,
            self.port,
            ssl=self.ssl_server,
            ssl_handshake_timeout=self.idle_timeout if self.ssl_server else None,
        )
        port = int(self._server.sockets[0].getsockname()[1])
        scheme = "msrps" if self.ssl_server is not None else "msrp"
        self._uri = MsrpUri(scheme=scheme, host=self.advertised_host, port=port)
        log.info("msrp listening on %s", self._uri)
        return self._uri

    def new_local_uri(self) -> MsrpUri:
        """A fresh session URI for SDP a=path: our URI with a random session-id."""
        return self.uri.with_session(new_session_id())

    def create_session(
        self,
        peer_path: str | MsrpUri | Iterable[str | MsrpUri],
        *,
        local_uri: MsrpUri | None = None,
        role: str = "active",
        via_relay: bool | None = None,
        accept_types: Sequence[str] = ("*",),
        on_event: Callable[[SessionEvent], None] | None = None,
        **options: Any,
    ) -> Session:
        """Register a session so inbound requests match it at once; then `connect`.

        `role` comes from SDP (RFC 4975 §5.4 / RFC 6135 a=setup, decided by the
        caller). `via_relay` (default: whenever `use_relay` set a relay up, or
        `relay_required`) routes it per RFC 4976: `Session.local_path` (our
        a=path) is Use-Path + our URI and requests go to Use-Path + `peer_path`
        on the relay link; ValueError without a relay, MsrpSessionError(503)
        while it is down (or, with `relay_required`, not up yet).
        `options` go to `MsrpSession` (peer_accept_types, peer_max_size,
        chunk_size, max_message_size, transaction_timeout, ...).
        """
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}")
        peer = to_path(peer_path)
        if not peer:
            raise ValueError("the peer path needs at least one URI")
        relay = self._relay_for(via_relay)
        use_path = () if relay is None else relay.client.use_path
        options.setdefault("reassembly_budget", self.reassembly)
        core = MsrpSession(
            local_uri or self.new_local_uri(),
            (*use_path, *peer),
            accept_types=accept_types,
            **options,
        )
        self.table.add(core)
        handle = Session(self, core, role, on_event, relay, use_path)
        self._handles[core.session_id] = handle
        return handle

    async def close(self) -> None:
        for handle in list(self._handles.values()):
            handle.close("endpoint closing")
        for task in list(self._connecting.values()):
            task.cancel()
        links = list(self._links)
        for link in links:
            link.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        if links:
            await asyncio.wait([link.lost for link in links], timeout=5.0)
        self._relay = None

    # -- internals -----------------------------------------------------------------
    def _relay_for(self, via_relay: bool | None) -> _RelayBinding | None:
        relay = self._relay
        if via_relay is False or (via_relay is None and relay is None and not self.relay_required):
            return None
        if relay is None:
            if self.relay_required:
                raise MsrpSessionError(503, "relay not authenticated yet")
            raise ValueError("no relay: call use_relay first")
        if not relay.up:
            raise MsrpSessionError(503, f"relay down: {relay.client.state.value}")
        return relay

    async def _outbound_link(self, first_hop: MsrpUri, timeout: float) -> Link:
        key = _key(first_hop)
        link = self._outbound.get(key)
        if link is not None and not link.core.closed:
            return link
        task = self._connecting.get(key)
        if task is None:
            task = asyncio.ensure_future(self._open(key, first_hop))
            self._connecting[key] = task
            task.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.wait_for(asyncio.shield(task), timeout)

    async def _open(self, key: _Key, uri: MsrpUri) -> Link:
        link = await self._connect(key, uri)
        self._outbound[key] = link
        return link

    async def _connect(self, key: _Key, uri: MsrpUri, *, keep_open: bool = False) -> Link:
        loop = asyncio.get_running_loop()
        ctx = None
        if uri.secure:
            ctx = self.ssl_client or _ssl.create_default_context()
        _, link = await loop.create_connection(
            lambda: Link(self, outbound=True, key=key, keep_open=keep_open),
            uri.host,
            key[2],
            ssl=ctx,
            server_hostname=uri.host if ctx is not None else None,
        )
        return link

    def _link_gone(self, link: Link) -> None:
        self._links.discard(link)
        if link.key is not None and self._outbound.get(link.key) is link:
            del self._outbound[link.key]

    def _connection_event(self, link: Link, event: ConnectionEvent) -> None:
        if isinstance(event, SessionBound | SessionMoved):
            handle = self._handles.get(event.session.session_id)
            if handle is not None:
                handle._bind(link)
            if isinstance(event, SessionMoved):
                self.stats["sessions_moved"] += 1
                log.info(
                    "msrp session %s moved to connection %s: its bound connection was lost",
                    event.session.session_id,
                    link.peername,
                )
            return
        if isinstance(event, AlternateConnection):
            self.stats["alternate_connections"] += 1
            log.info(
                "msrp session %s: request on a second connection from %s, From-Path "
                "matching; accepted and answered there (first time for this connection)",
                event.session.session_id,
                link.peername,
            )
            return
        if isinstance(event, RequestRejected):
            self.stats[f"rejected_{event.code}"] += 1
            log.info("msrp %s refused %d %s", event.method, event.code, event.reason)
        else:
            self.stats["unmatched_responses"] += 1
            log.debug("msrp unmatched response %s", event)
        if self.on_event is not None:
            self.on_event(event)

    def _forget(self, handle: Session) -> None:
        self.table.remove(handle.core)
        if self._handles.get(handle.core.session_id) is handle:
            del self._handles[handle.core.session_id]
