"""Sans-I/O MSRP session (RFC 4975 §5-§7): one per negotiated MSRP media stream.

Fed matched requests, responses and the time; yields frames to send (`pull`),
events (`events`) and deadlines (`next_deadline` / `on_timer`). It never raises
on peer input: bad requests get a precise status and a `RequestRejected` event.
The connection core routes frames to it and owns the bytes.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gw.msrp.chunks import ByteRange, Reassembler
from gw.msrp.events import (
    IncomingAborted,
    IncomingExpired,
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    Outcome,
    ReportIgnored,
    RequestRejected,
    SessionClosed,
    SessionEvent,
)
from gw.msrp.frame import REASONS, Frame, make_response
from gw.msrp.outgoing import FAILURE_REPORT_VALUES, OutgoingMessage
from gw.msrp.report import make_report, parse_status
from gw.msrp.uri import MsrpUri, format_path, new_transaction_id, parse_msrp_uri, parse_path

__all__ = ["MsrpSession", "media_type_accepted", "to_path"]

_TXN, _REPORT, _EXPIRE = range(3)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly")
_REMEMBERED = 1024  # incoming message ids kept for REPORTs and repeated rejections
_OVERHEAD = 256  # rough header bytes per frame, for the pull budget
_V = TypeVar("_V")


@dataclass(slots=True)
class _Txn:
    message: OutgoingMessage | None  # None: an abort chunk, whose answer does not matter
    deadline: float


@dataclass(slots=True)
class _Incoming:
    from_path: tuple[MsrpUri, ...]  # REPORTs go back along it (relays included)
    success_report: bool
    failure_report: str
    total: int | None = None  # declared (or learned from the '$' chunk)
    high: int = 0  # highest byte seen, for failure REPORTs of partial messages
    complete: bool = False


def to_path(value: str | MsrpUri | Iterable[str | MsrpUri]) -> tuple[MsrpUri, ...]:
    """Normalise an SDP a=path value (string, URI or list of either)."""
    if isinstance(value, MsrpUri):
        return (value,)
    if isinstance(value, str):
        return parse_path(value)
    return tuple(u if isinstance(u, MsrpUri) else parse_msrp_uri(u) for u in value)


def media_type_accepted(content_type: str, accepted: Iterable[str]) -> bool:
    """a=accept-types matching: exact type/subtype, `type/*` or `*` (§8.6)."""
    media = content_type.split(";", 1)[0].strip().lower()
    major = media.split("/", 1)[0]
    for pattern in accepted:
        p = pattern.strip().lower()
        if p in ("*", media) or p == f"{major}/*":
            return True
    return False


class MsrpSession:
    """One MSRP session: chunked sending with transaction and report tracking,
    reassembly and answering of incoming SENDs, REPORT generation."""

    def __init__(
        self,
        local_uri: MsrpUri | str,
        peer_path: str | MsrpUri | Iterable[str | MsrpUri],
        *,
        accept_types: Sequence[str] = ("*",),
        peer_accept_types: Sequence[str] | None = None,
        peer_max_size: int | None = None,
        chunk_size: int = 2048,
        max_chunk_size: int = 1 << 20,
        max_message_size: int = 10 << 20,
        transaction_timeout: float = 30.0,
        report_timeout: float | None = 60.0,
        incomplete_timeout: float = 60.0,
        direction: str = "sendrecv",
        auto_success_report: bool = False,
    ) -> None:
        self.local_uri = local_uri if isinstance(local_uri, MsrpUri) else parse_msrp_uri(local_uri)
        if not self.local_uri.session_id:
            raise ValueError("the local URI needs a session-id")
        self.peer_path = to_path(peer_path)
        if not self.peer_path:
            raise ValueError("the peer path needs at least one URI")
        if chunk_size < 1 or transaction_timeout <= 0 or direction not in _DIRECTIONS:
            raise ValueError("bad chunk_size, transaction_timeout or direction")
        self.session_id: str = self.local_uri.session_id
        self.accept_types = tuple(accept_types)
        self.peer_accept_types = None if peer_accept_types is None else tuple(peer_accept_types)
        self.peer_max_size = peer_max_size
        self.chunk_size = chunk_size
        self.max_chunk_size = max_chunk_size
        self.transaction_timeout = transaction_timeout
        self.report_timeout = report_timeout
        self.direction = direction
        self.auto_success_report = auto_success_report
        self.connection: object | None = None  # set by the connection core that carries us
        self.closed = False
        self._to_path = format_path(self.peer_path)
        self._from_path = str(self.local_uri)
        self._reassembler = Reassembler(max_message_size, incomplete_timeout=incomplete_timeout)
        self._control: deque[Frame] = deque()  # responses, REPORTs, aborts: sent first
        self._sending: deque[OutgoingMessage] = deque()
        self._messages: dict[str, OutgoingMessage] = {}  # not yet final
        self._txns: dict[str, _Txn] = {}
        self._timers: list[tuple[float, int, int, str]] = []
        self._seq = itertools.count()
        self._expire_at: float | None = None
        self._auto_report: str | None = None
        self._incoming: OrderedDict[str, _Incoming] = OrderedDict()
        self._rejected: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._events: list[SessionEvent] = []

    @property
    def peer_uri(self) -> MsrpUri:
        """The peer endpoint (last URI of its path; relays come first)."""
        return self.peer_path[-1]

    def events(self) -> list[SessionEvent]:
        """Take the events reported since the last call."""
        events, self._events = self._events, []
        return events

    # -- sending -----------------------------------------------------------------
    def send_message(
        self,
        body: bytes | memoryview,
        content_type: str,
        *,
        success_report: bool | None = None,
        failure_report: str = "yes",
        message_id: str | None = None,
        now: float,
    ) -> OutgoingMessage:
        """Queue a message. Local refusals (closed, too big for the peer's
        max-size, type the peer does not accept) fail it at once, without sending.
        ValueError for caller mistakes (bad Failure-Report, Message-ID, type)."""
        if not content_type or any(c < " " or c == "\x7f" for c in content_type):
            raise ValueError(f"bad Content-Type {content_type!r}")
        msg = self._new_message(body, content_type, success_report, failure_report, message_id)
        if self.closed:
            self._fail(msg, 481, "session closed")
        elif self.direction == "recvonly":
            self._fail(msg, 403, "session is receive-only")
        elif self.peer_max_size is not None and msg.size > self.peer_max_size:
            self._fail(msg, 413, f"message exceeds the peer's max-size {self.peer_max_size}")
        elif self.peer_accept_types is not None and not media_type_accepted(
            content_type, self.peer_accept_types
        ):
            self._fail(msg, 415, "content type not in the peer's accept-types")
        else:
            self._sending.append(msg)
        return msg

    def send_empty(self, *, first: bool = False) -> OutgoingMessage:
        """Queue a body-less SEND (§5.4 binding, keepalive); `first` puts it ahead."""
        msg = self._new_message(b"", None, None, "yes", None)
        if self.closed:
            self._fail(msg, 481, "session closed")
        elif first:
            self._sending.appendleft(msg)
        else:
            self._sending.append(msg)
        return msg

    def abort(self, message: OutgoingMessage) -> bool:
        """Abort a message still being sent: '#' chunk to the peer, `MessageAborted`.
        False when it is final or fully sent already (then nothing is left to abort)."""
        if message.outcome is not None or message.all_sent:
            return False
        self._stop(message)
        self._finish(message, MessageAborted(message.message_id))
        return True

    def _new_message(
        self,
        body: bytes | memoryview,
        content_type: str | None,
        success_report: bool | None,
        failure_report: str,
        message_id: str | None,
    ) -> OutgoingMessage:
        mid = message_id or new_transaction_id()
        if mid in self._messages:
            raise ValueError(f"Message-ID {mid!r} is already in use")
        msg = OutgoingMessage(
            mid,
            body,
            content_type,
            success_report=success_report,
            failure_report=failure_report,
            chunk_size=self.chunk_size,
        )
        self._messages[mid] = msg
        return msg

    # -- output ------------------------------------------------------------------
    def has_outgoing(self) -> bool:
        return bool(self._control or self._sending)

    def pull(self, now: float, budget: int = 1 << 16) -> list[Frame]:
        """Frames to write now, about `budget` bytes: control frames first, then
        chunks round-robin across messages. Transaction timers start here."""
        frames: list[Frame] = []
        while self._control and budget > 0:
            frame = self._control.popleft()
            if frame.method == "SEND":  # an abort chunk: absorb its response
                self._txns[frame.tid] = _Txn(None, now + self.transaction_timeout)
            frames.append(frame)
            budget -= len(frame.body) + _OVERHEAD
        while self._sending and budget > 0:
            msg = self._sending[0]
            frame = self._chunk_frame(msg, now)
            frames.append(frame)
            budget -= len(frame.body) + _OVERHEAD
            if msg.all_sent:
                self._sending.popleft()
                self._settle(msg, now)
            else:
                self._sending.rotate(-1)
        return frames

    def _chunk_frame(self, msg: OutgoingMessage, now: float) -> Frame:
        chunk = msg.next_chunk()
        data = bytes(chunk.data)
        headers = self._headers(msg)
        headers.append(("Byte-Range", f"{chunk.start}-{chunk.end}/{chunk.total}"))
        if msg.content_type is not None:
            headers.append(("Content-Type", msg.content_type))
        frame = Frame(_tid_for(data), "SEND", headers=headers, body=data, flag=chunk.flag)
        if msg.failure_report != "no":
            deadline = now + self.transaction_timeout
            self._txns[frame.tid] = _Txn(msg, deadline)
            msg.in_flight.add(frame.tid)
            self._push(deadline, _TXN, frame.tid)
        return frame

    def _headers(self, msg: OutgoingMessage) -> list[tuple[str, str]]:
        headers = [
            ("To-Path", self._to_path),
            ("From-Path", self._from_path),
            ("Message-ID", msg.message_id),
        ]
        if msg.success_report is not None:
            headers.append(("Success-Report", "yes" if msg.success_report else "no"))
        if msg.failure_report != "yes":
            headers.append(("Failure-Report", msg.failure_report))
        return headers

    def _stop(self, msg: OutgoingMessage) -> None:
        """Send no more chunks of `msg`; tell the peer with '#' if it got some."""
        if msg in self._sending:
            self._sending.remove(msg)
        start = msg.next_start
        if msg.stop():
            headers = self._headers(msg)
            headers.append(("Byte-Range", f"{start}-{start - 1}/{msg.size}"))
            self._control.append(Frame(new_transaction_id(), "SEND", headers=headers, flag="#"))

    # -- outcomes ----------------------------------------------------------------
    def _settle(self, msg: OutgoingMessage, now: float) -> None:
        """Decide a message once nothing is left to send or to wait a response for."""
        if msg.outcome is not None or not msg.all_sent or msg.in_flight:
            return
        if msg.success_report:
            if msg.report_deadline is None and self.report_timeout is not None:
                msg.report_deadline = now + self.report_timeout
                self._push(msg.report_deadline, _REPORT, msg.message_id)
            return
        self._finish(msg, MessageDelivered(msg.message_id, msg.failure_report == "yes"))

    def _fail(self, msg: OutgoingMessage, code: int, reason: str) -> None:
        if msg.outcome is None:
            self._stop(msg)
            self._finish(msg, MessageFailed(msg.message_id, code, reason))

    def _finish(self, msg: OutgoingMessage, outcome: Outcome) -> None:
        msg.outcome = outcome
        self._messages.pop(msg.message_id, None)
        self._events.append(outcome)

    def handle_response(self, frame: Frame, now: float) -> bool:
        """A transaction response; False if it answers no transaction of ours."""
        txn = self._txns.pop(frame.tid, None)
        if txn is None:
            return False
        msg = txn.message
        if msg is None or msg.outcome is not None:
            return True
        msg.in_flight.discard(frame.tid)
        code = frame.status or 0
        if 200 <= code < 300:
            self._settle(msg, now)
        else:
            self._fail(msg, code, frame.comment or REASONS.get(code, "error"))
        return True

    # -- receiving ---------------------------------------------------------------
    def handle_request(self, frame: Frame, now: float) -> None:
        """A request already matched to this session (To-Path and From-Path)."""
        if frame.method == "REPORT":
            self._on_report(frame)
            return
        if frame.method != "SEND":
            self._answer(frame, 501, f"{frame.method} not implemented")
        elif self.closed:
            self._answer(frame, 481, "session closed")
        else:
            self._answer(frame, *self._on_send(frame, now))
            if self._auto_report is not None:  # after the 200, not before it
                self.report_success(self._auto_report)
                self._auto_report = None

    def _answer(self, frame: Frame, code: int, reason: str) -> None:
        """Respond per Failure-Report (§7.1.1): yes always, partial on error, no never."""
        fr = _failure_report(frame)
        answered = fr == "yes" or (fr == "partial" and code != 200)
        if code != 200:
            self._events.append(
                RequestRejected(code, reason, frame.method, frame.message_id, answered)
            )
        if answered:
            comment = None if code == 200 else reason
            self._control.append(make_response(frame, code, comment, responder=self.local_uri))

    def _on_send(self, frame: Frame, now: float) -> tuple[int, str]:
        mid, ct, body = frame.message_id, frame.content_type, frame.body
        if not mid:
            return 400, "missing Message-ID"
        try:
            raw = frame.byte_range
            start, end, total = raw if raw is not None else (1, len(body), len(body))
            byte_range = ByteRange(start, end, total)
        except ValueError:
            return 400, "malformed Byte-Range"
        if not body and ct is None and (raw is None or total == 0):
            return 200, "OK"  # empty SEND (§5.4): binds or keeps alive, delivers nothing
        if self.direction == "sendonly":
            return 403, "session is send-only"
        if mid in self._rejected:
            return self._rejected[mid]
        if len(body) > self.max_chunk_size:
            return self._reject(mid, 413, "chunk too large")
        if ct is not None and not media_type_accepted(ct, self.accept_types):
            return self._reject(mid, 415, f"{ct} not in accept-types")
        if ct is None and body and start == 1:
            return self._reject(mid, 400, "missing Content-Type")
        info = self._incoming.get(mid)
        if info is None:
            info = _Incoming(
                frame.from_path,
                (frame.header("Success-Report") or "").lower() == "yes",
                _failure_report(frame),
            )
            _remember(self._incoming, mid, info)
        result = self._reassembler.add(mid, byte_range, body, frame.flag, ct, now)
        if result.status != 200:
            return result.status, result.reason
        info.high = max(info.high, start + len(body) - 1)
        info.total = total if total is not None else info.total
        if result.aborted:
            self._events.append(IncomingAborted(mid))
        elif result.completed is not None:
            done = result.completed
            info.total, info.complete = done.total, True
            ctype = done.content_type or "application/octet-stream"
            self._events.append(
                MessageReceived(mid, ctype, done.body, info.success_report, info.failure_report)
            )
            if self.auto_success_report:
                self._auto_report = mid
        elif self._expire_at is None and len(self._reassembler):
            self._expire_at = now + self._reassembler.incomplete_timeout / 2
            self._push(self._expire_at, _EXPIRE, "")
        return 200, "OK"

    def _reject(self, mid: str, code: int, reason: str) -> tuple[int, str]:
        _remember(self._rejected, mid, (code, reason))
        return code, reason

    def _on_report(self, frame: Frame) -> None:
        """REPORTs are never answered (§7.1.2); they settle our outgoing messages."""
        mid, status = frame.message_id, parse_status(frame.header("Status"))
        if not mid or status is None:
            self._events.append(RequestRejected(400, "malformed REPORT", "REPORT", mid, False))
            return
        msg = self._messages.get(mid)
        if msg is None or msg.empty or status.namespace != "000":
            why = "unknown message" if msg is None else "not a report we can use"
            self._events.append(ReportIgnored(mid, status.code, why))
        elif status.code != 200:
            self._fail(msg, status.code, status.comment or REASONS.get(status.code, "error"))
        else:
            try:
                raw = frame.byte_range
            except ValueError:
                raw = None
            start, end = (1, msg.size) if raw is None else (raw[0], raw[1] or msg.size)
            if msg.cover(start, end):
                self._finish(msg, MessageDelivered(mid, True))

    # -- reports we send ---------------------------------------------------------
    def report_success(self, message_id: str) -> bool:
        """Queue a success REPORT for a received message, if the sender asked for one
        (Success-Report: yes). Call it once the message is really delivered."""
        info = self._incoming.get(message_id)
        if info is None or not info.success_report or not info.complete or self.closed:
            return False
        total = info.total or 0
        byte_range = ByteRange(1, total, total)
        self._control.append(
            make_report(info.from_path, self.local_uri, message_id, byte_range, 200)
        )
        return True

    def report_failure(self, message_id: str, code: int, reason: str | None = None) -> bool:
        """Queue a failure REPORT (e.g. downstream delivery failed), unless the
        sender said Failure-Report: no."""
        info = self._incoming.get(message_id)
        if info is None or info.failure_report == "no" or self.closed:
            return False
        total = info.total
        byte_range = ByteRange(1, total if info.complete and total else info.high, total)
        self._control.append(
            make_report(info.from_path, self.local_uri, message_id, byte_range, code, reason)
        )
        return True

    # -- time --------------------------------------------------------------------
    def _push(self, deadline: float, kind: int, key: str) -> None:
        heapq.heappush(self._timers, (deadline, next(self._seq), kind, key))

    def _live(self, deadline: float, kind: int, key: str) -> bool:
        if kind == _TXN:
            txn = self._txns.get(key)
            return txn is not None and txn.deadline == deadline
        if kind == _REPORT:
            msg = self._messages.get(key)
            return msg is not None and msg.report_deadline == deadline
        return self._expire_at == deadline

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers and not self._live(timers[0][0], timers[0][2], timers[0][3]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def on_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, key = heapq.heappop(timers)
            if not self._live(deadline, kind, key):
                continue
            if kind == _TXN:
                self._txn_timeout(key, now)
            elif kind == _REPORT:
                self._fail(self._messages[key], 408, "no success report")
            else:
                self._expire(now)

    def _txn_timeout(self, tid: str, now: float) -> None:
        msg = self._txns.pop(tid).message
        if msg is None or msg.outcome is not None:
            return
        msg.in_flight.discard(tid)
        if msg.failure_report == "partial":
            self._settle(msg, now)  # partial: no news is good news
        else:
            self._fail(msg, 408, "transaction timeout")

    def _expire(self, now: float) -> None:
        self._expire_at = None
        for mid in self._reassembler.expire(now):
            self._events.append(IncomingExpired(mid))
            info = self._incoming.get(mid)
            if info is not None and info.failure_report != "no":
                self.report_failure(mid, 408, "message incomplete")
        if len(self._reassembler):
            self._expire_at = now + self._reassembler.incomplete_timeout / 2
            self._push(self._expire_at, _EXPIRE, "")

    # -- lifecycle ---------------------------------------------------------------
    def bind(self, connection: object, *, send_empty: bool) -> OutgoingMessage | None:
        """Attach to a connection; the side that opened it sends an empty SEND first."""
        self.connection = connection
        return self.send_empty(first=True) if send_empty else None

    def connection_lost(self, reason: str = "connection lost") -> None:
        """Our connection died: the session ends, pending messages fail with 408."""
        self.connection = None
        self._end(408, reason)

    def close(self, reason: str = "closed") -> None:
        """End the session locally; pending messages fail with 481."""
        self._end(481, reason)

    def _end(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        for msg in list(self._messages.values()):
            self._fail(msg, code, reason)
        self._sending.clear()
        if self.connection is None:
            self._control.clear()
        self._events.append(SessionClosed(reason))


def _failure_report(frame: Frame) -> str:
    value = (frame.header("Failure-Report") or "yes").strip().lower()
    return value if value in FAILURE_REPORT_VALUES else "yes"


def _tid_for(body: bytes) -> str:
    """A transaction id whose end-line cannot occur inside `body`."""
    tid = new_transaction_id()
    while b"-------" + tid.encode() in body:
        tid = new_transaction_id()
    return tid


def _remember(table: OrderedDict[str, _V], key: str, value: _V) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > _REMEMBERED:
        table.popitem(last=False)
