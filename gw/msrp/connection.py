"""Sans-I/O MSRP connection (RFC 4975 §5.4, §6, §7.3): one TCP/TLS stream, many sessions.

Bytes in are parsed and each request is matched to a session through the
endpoint-wide `SessionTable` (§7.3: the top To-Path URI is ours and the whole
From-Path is the session's peer path, URI by URI); unmatched requests get 481,
and nothing is ever answered to a REPORT. Responses are routed back to the
session by transaction id. Bytes out are pulled round-robin from the bound
sessions. A connection with no session bound is closed after `idle_timeout`,
so one that never sends anything valid does not linger.

A session is bound to the connection its first request came on (§5.4), but a
peer may open a second one to the same URI and send on it: OpenSIPS's msrp_ua
does, its bind SEND on one connection and the message on another, both with
`Failure-Report: no`, so a 506 there silently loses the text. A request whose
whole From-Path matches is therefore accepted on any connection and answered
on the one it came on (`AlternateConnection`, once per session and connection).
Our own requests keep using the bound connection; if that one is lost while an
alternate is open, the session moves there (`SessionMoved`) instead of ending.

Other users of the same stream (an RFC 4976 relay client AUTHing on it) plug in
through `response_hook`, which may claim responses before they are routed, and
`queue_frame`, which sends their requests between the sessions' whole frames.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from gw.msrp.events import RequestRejected, UnmatchedResponse
from gw.msrp.frame import Frame, FrameError, FrameParser, make_response, serialize
from gw.msrp.outgoing import OutgoingMessage
from gw.msrp.session import MsrpSession
from gw.msrp.uri import MsrpUri, MsrpUriError

__all__ = [
    "AlternateConnection",
    "ConnectionEvent",
    "MsrpConnection",
    "ResponseHook",
    "SessionBound",
    "SessionMoved",
    "SessionTable",
    "same_path",
]

_QUANTUM = 1 << 16  # bytes pulled from one session before the next gets a turn
_OVERHEAD = 256  # rough header bytes per frame, for budgets


@dataclass(frozen=True, slots=True)
class SessionBound:
    """A session got bound to this connection by its first request (§5.4)."""

    session: MsrpSession


@dataclass(frozen=True, slots=True)
class AlternateConnection:
    """A request of a session bound to another connection arrived here with its whole
    From-Path matching: accepted and answered here. Once per session and connection."""

    session: MsrpSession


@dataclass(frozen=True, slots=True)
class SessionMoved:
    """The session's bound connection was lost; it is carried here now (a connection
    that had carried its requests as an alternate)."""

    session: MsrpSession


ConnectionEvent = (
    SessionBound | AlternateConnection | SessionMoved | RequestRejected | UnmatchedResponse
)

ResponseHook = Callable[[Frame | FrameError], bool]
"""Offered each response no session transaction owns, readable (`Frame`) or not
(`FrameError` with a tid); returns True to claim it, so the core drops it silently."""


def same_path(received: tuple[MsrpUri, ...], expected: tuple[MsrpUri, ...]) -> bool:
    """RFC 4975 §7.3: a From-Path matches the session's peer path when it has the same
    URIs in the same order, each equal by §6.1 (a relay prepends the URI it gave
    in Use-Path, so a relayed path arrives as it was negotiated)."""
    if received == expected:
        return True
    return len(received) == len(expected) and all(
        r.matches(e) for r, e in zip(received, expected, strict=True)
    )


class SessionTable:
    """Live sessions of an endpoint by local session-id, shared by its connections.

    It also knows, per session, the connections other than the bound one that
    carried its requests (alternates), so a lost bound connection can hand the
    session over instead of ending it.
    """

    def __init__(self) -> None:
        self._by_id: dict[str, MsrpSession] = {}
        self._alternates: dict[str, list[MsrpConnection]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, session: MsrpSession) -> None:
        if session.session_id in self._by_id:
            raise ValueError(f"session-id {session.session_id!r} already in use")
        self._by_id[session.session_id] = session

    def remove(self, session: MsrpSession) -> None:
        if self._by_id.get(session.session_id) is session:
            del self._by_id[session.session_id]
            self._alternates.pop(session.session_id, None)

    def note_alternate(self, session: MsrpSession, connection: MsrpConnection) -> bool:
        """Record that `connection` carried a request of `session`; True the first time."""
        known = self._alternates.setdefault(session.session_id, [])
        if connection in known:
            return False
        known.append(connection)
        return True

    def take_alternate(self, session: MsrpSession, lost: MsrpConnection) -> MsrpConnection | None:
        """An open alternate connection of `session` other than `lost` (forgotten here)."""
        known = self._alternates.get(session.session_id)
        while known:
            connection = known.pop(0)
            if connection is not lost and not connection.closed:
                if not known:
                    del self._alternates[session.session_id]
                return connection
        self._alternates.pop(session.session_id, None)
        return None

    def forget_connection(self, connection: MsrpConnection) -> None:
        """`connection` is gone: it is no alternate of any session any more."""
        for sid in connection.alternate_ids():
            known = self._alternates.get(sid)
            if known is not None and connection in known:
                known.remove(connection)
                if not known:
                    del self._alternates[sid]

    def get(self, session_id: str) -> MsrpSession | None:
        return self._by_id.get(session_id)

    def match(self, frame: Frame) -> MsrpSession | tuple[int, str]:
        """The session a request belongs to, or the (status, reason) to refuse it."""
        try:
            to, frm = frame.to_path, frame.from_path
        except MsrpUriError:
            return 400, "malformed path"
        if not to or not frm:
            return 400, "missing To-Path or From-Path"
        session = self._by_id.get(to[0].session_id or "")
        if session is None or session.closed or not session.local_uri.matches(to[0]):
            return 481, "no such session"
        if not same_path(frm, session.peer_path):
            return 481, "From-Path does not match the session's peer path"
        return session


class MsrpConnection:
    """One MSRP connection; `outbound` when we opened it (we are the active side).

    `keep_open` exempts it from the idle timeout (and tells the adapter not to
    close it with its last session): a relay grant lives only as long as its
    connection. It may be changed at any time; the idle clock runs regardless.
    """

    def __init__(
        self,
        table: SessionTable,
        *,
        now: float,
        outbound: bool = False,
        idle_timeout: float = 30.0,
        max_chunk_size: int = 1 << 20,
        max_header_bytes: int = 16384,
        keep_open: bool = False,
        response_hook: ResponseHook | None = None,
    ) -> None:
        self.table = table
        self.outbound = outbound
        self.idle_timeout = idle_timeout
        self.keep_open = keep_open
        self.response_hook = response_hook
        self.closed = False
        self.close_reason: str | None = None
        self._parser = FrameParser(max_chunk_size, max_header_bytes)
        self._sessions: dict[str, MsrpSession] = {}
        self._alternates: dict[str, MsrpSession] = {}  # bound elsewhere, requests seen here
        self._control: deque[Frame] = deque()  # our own answers (481, 400, ...)
        self._ready: deque[str] = deque()
        self._ready_set: set[str] = set()
        self._touched: dict[str, MsrpSession] = {}
        self._events: list[ConnectionEvent] = []
        # Transaction id -> session, for routing responses. An entry is dropped when
        # its response comes, else after at least its session's transaction timeout + 1 s:
        # two generations, the older dropped at each rotation (no per-entry expiry list).
        self._tids: dict[str, MsrpSession] = {}
        self._tids_old: dict[str, MsrpSession] = {}
        self._tid_period = 0.0  # the longest transaction timeout + 1 s seen
        self._tid_rotate_at: float | None = None  # when _tids becomes _tids_old
        self._timers: list[tuple[float, int, str]] = []
        self._scheduled: dict[str, float] = {}
        self._seq = itertools.count()
        self._idle_deadline: float | None = now + idle_timeout

    @property
    def sessions(self) -> list[MsrpSession]:
        return list(self._sessions.values())

    @property
    def routing_entries(self) -> int:
        """Transaction ids kept to route responses back to their session (both generations)."""
        return len(self._tids) + len(self._tids_old)

    def alternate_ids(self) -> list[str]:
        """Session-ids of sessions bound elsewhere whose requests came here."""
        return list(self._alternates)

    def has_output(self) -> bool:
        """Whether `data_to_send` may have something (cheap; it may still return b"")."""
        return bool(self._control or self._ready)

    def has_events(self) -> bool:
        """Whether `events` or `touched` would return anything."""
        return bool(self._events or self._touched)

    def events(self) -> list[ConnectionEvent]:
        """Take the connection-level events reported since the last call."""
        events, self._events = self._events, []
        return events

    def touched(self) -> list[MsrpSession]:
        """Take the sessions that may have new events since the last call."""
        touched = list(self._touched.values())
        self._touched.clear()
        return touched

    # -- sessions ----------------------------------------------------------------
    def attach(self, session: MsrpSession, now: float) -> OutgoingMessage | None:
        """Carry `session` here. On a connection we opened, its first SEND is an
        empty one (§5.4) so the passive peer can bind the session at once."""
        if session.connection is self:
            return None
        if session.connection is not None:
            raise ValueError("session is bound to another connection")
        empty = session.bind(self, send_empty=self.outbound)
        self._sessions[session.session_id] = session
        self._idle_deadline = None
        self.wake(session)
        return empty

    def detach(self, session: MsrpSession, now: float) -> None:
        """Stop carrying `session` (it was closed); unsent frames of it are dropped."""
        if self._sessions.pop(session.session_id, None) is session:
            session.connection = None
            if not self._sessions:
                self._idle_deadline = now + self.idle_timeout

    def wake(self, session: MsrpSession) -> None:
        """Note that a bound session may have new output, events or deadlines
        (after the caller used its API directly)."""
        sid = session.session_id
        if self._sessions.get(sid) is not session:
            return
        self._touched[sid] = session
        if sid not in self._ready_set and session.has_outgoing():
            self._ready_set.add(sid)
            self._ready.append(sid)
        self._schedule(session)

    def _schedule(self, session: MsrpSession) -> None:
        sid, deadline = session.session_id, session.next_deadline()
        current = self._scheduled.get(sid)
        if deadline is not None and (current is None or deadline < current):
            self._scheduled[sid] = deadline
            heapq.heappush(self._timers, (deadline, next(self._seq), sid))

    # -- input -------------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the peer. Never raises; a framing error closes the connection."""
        if self.closed:
            return
        for event in self._parser.feed(data):
            if isinstance(event, FrameError):
                self._frame_error(event)
            else:
                self.receive_frame(event.frame, now)
        if self._parser.closed:
            self.close("framing lost")

    def receive_frame(self, frame: Frame, now: float) -> None:
        """One parsed frame (also for adapters that parse themselves)."""
        if frame.method is None:
            if not self._route_response(frame, now) and not self._claimed(frame):
                self._events.append(UnmatchedResponse(frame.tid, frame.status))
            return
        match = self.table.match(frame)
        if isinstance(match, tuple):
            self._refuse(frame, *match)
            return
        if match.connection is None:
            self.attach(match, now)
            self._events.append(SessionBound(match))
        elif match.connection is not self:
            self._alternate_request(match, frame, now)
            return
        match.handle_request(frame, now)
        self.wake(match)

    def _alternate_request(self, session: MsrpSession, frame: Frame, now: float) -> None:
        """A request of a session bound to another connection, its whole path matching
        (see the module docstring): handled by the session, answered here."""
        sid = session.session_id
        if sid not in self._alternates:
            self._alternates[sid] = session
            if self.table.note_alternate(session, self):
                self._events.append(AlternateConnection(session))
        if not self._sessions:  # kept open while it carries requests (see on_timer)
            self._idle_deadline = now + self.idle_timeout
        session.handle_request(frame, now, self._control)
        self._touched[sid] = session

    def _refuse(self, frame: Frame, code: int, reason: str) -> None:
        failure_report = (frame.header("Failure-Report") or "yes").strip().lower()
        answered = frame.method != "REPORT" and failure_report != "no"
        if answered:
            self._control.append(make_response(frame, code, reason))
        self._events.append(RequestRejected(code, reason, frame.method, frame.message_id, answered))

    def _route_response(self, frame: Frame, now: float) -> bool:
        session = self._tids.pop(frame.tid, None)
        if session is None:
            session = self._tids_old.pop(frame.tid, None)
        if session is None or session.connection is not self:
            return False
        if not session.handle_response(frame, now):
            return False
        self.wake(session)
        return True

    def _claimed(self, item: Frame | FrameError) -> bool:
        return self.response_hook is not None and self.response_hook(item)

    def _frame_error(self, error: FrameError) -> None:
        request, answered = error.request, False
        is_response = request is None or request.method is None
        if is_response and error.tid is not None and self._claimed(error):
            return
        if (
            request is not None
            and request.method not in (None, "REPORT")
            and (request.header("Failure-Report") or "").strip().lower() != "no"
        ):
            try:
                self._control.append(make_response(request, error.code, error.reason))
                answered = True
            except (ValueError, MsrpUriError):
                pass  # no usable From-Path to answer along
        method = None if request is None else request.method
        mid = None if request is None else request.message_id
        self._events.append(RequestRejected(error.code, error.reason, method, mid, answered))

    # -- output ------------------------------------------------------------------
    def queue_frame(self, frame: Frame) -> None:
        """Send a frame of our own (e.g. an RFC 4976 AUTH) ahead of session data,
        never inside another frame. Its response goes to `response_hook`.
        ValueError if it cannot be serialized; dropped once the connection closed."""
        serialize(frame)  # fail here, not later in the adapter's write path
        if not self.closed:
            self._control.append(frame)

    def data_to_send(self, now: float, max_bytes: int = 1 << 18) -> bytes:
        """Up to about `max_bytes` to write; b"" when there is nothing to send."""
        return b"".join(serialize(f) for f in self.frames_to_send(now, max_bytes))

    def frames_to_send(self, now: float, max_bytes: int = 1 << 18) -> list[Frame]:
        """Like `data_to_send`, as frames (for adapters that write frames themselves)."""
        self._purge_tids(now)
        out = list(self._control)
        self._control.clear()
        budget = max_bytes - sum(len(f.body) + _OVERHEAD for f in out)
        while self._ready and budget > 0:
            sid = self._ready.popleft()
            self._ready_set.discard(sid)
            session = self._sessions.get(sid)
            if session is None:
                continue
            for frame in session.pull(now, min(budget, _QUANTUM)):
                if frame.method == "SEND" and frame.header("Failure-Report") != "no":
                    self._tids[frame.tid] = session
                    period = session.transaction_timeout + 1.0
                    if period > self._tid_period:
                        self._tid_period = period
                        self._tid_rotate_at = now + period
                    elif self._tid_rotate_at is None:
                        self._tid_rotate_at = now + period
                out.append(frame)
                budget -= len(frame.body) + _OVERHEAD
            self.wake(session)
        return out

    def _purge_tids(self, now: float) -> None:
        """Rotate the generations: an entry is at least one full period old when its
        generation is dropped (a period covers every session's timeout + 1 s)."""
        rotate_at = self._tid_rotate_at
        if rotate_at is None or now < rotate_at:
            return
        if now >= rotate_at + self._tid_period:  # two periods passed: all are old enough
            self._tids_old = {}
            self._tids = {}
        else:
            self._tids_old = self._tids
            self._tids = {}
        self._tid_rotate_at = now + self._tid_period if self._tids_old else None

    # -- time and end ------------------------------------------------------------
    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers:  # drop entries whose session's deadline moved (answered, closed)
            deadline, _, sid = timers[0]
            session = self._sessions.get(sid)
            if session is not None and session.next_deadline() == deadline:
                break
            heapq.heappop(timers)
            if self._scheduled.get(sid) == deadline:
                del self._scheduled[sid]
            if session is not None:
                self._schedule(session)
        idle = None if self.keep_open else self._idle_deadline
        deadlines = [d for d in (idle,) if d is not None]
        if self._timers:
            deadlines.append(self._timers[0][0])
        return min(deadlines) if deadlines else None

    def on_timer(self, now: float) -> None:
        idle = None if self.keep_open else self._idle_deadline
        if idle is not None and now >= idle and not self.closed:
            if self._alternates_live():
                self._idle_deadline = now + self.idle_timeout
            else:
                self.close("idle: no session on this connection")
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, sid = heapq.heappop(timers)
            if self._scheduled.get(sid) == deadline:
                del self._scheduled[sid]
            session = self._sessions.get(sid)
            if session is not None:
                session.on_timer(now)
                self.wake(session)
        self._purge_tids(now)

    def _alternates_live(self) -> bool:
        """Whether a session this connection is an alternate of is still open."""
        for sid, session in list(self._alternates.items()):
            if session.closed or self.table.get(sid) is not session:
                del self._alternates[sid]
        return bool(self._alternates)

    def adopt(self, session: MsrpSession) -> None:
        """Carry `session`, whose bound connection was lost, here (an alternate)."""
        sid = session.session_id
        session.connection = self
        self._sessions[sid] = session
        self._alternates.pop(sid, None)
        self._idle_deadline = None
        self._events.append(SessionMoved(session))
        self.wake(session)

    def close(self, reason: str) -> None:
        """Ask the adapter to close (after writing what is pending)."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason

    def connection_lost(self, reason: str | None = None) -> list[MsrpConnection]:
        """The stream is gone. A bound session with an open alternate connection moves
        there (its requests in flight here time out); every other one ends, its pending
        messages failing (408). Returns the connections that took sessions over, whose
        adapters have events to hand out."""
        self.close(reason or "connection lost")
        why = reason or self.close_reason or "connection lost"
        self.table.forget_connection(self)
        self._alternates.clear()
        adopters: list[MsrpConnection] = []
        for session in self._sessions.values():
            other = None if session.closed else self.table.take_alternate(session, self)
            if other is not None:
                other.adopt(session)
                if other not in adopters:
                    adopters.append(other)
                continue
            session.connection_lost(why)
            self._touched[session.session_id] = session
        self._sessions.clear()
        self._ready.clear()
        self._ready_set.clear()
        self._control.clear()
        return adopters
