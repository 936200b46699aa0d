"""Sans-I/O MSRP session (RFC 4975 §5-§7): one per negotiated MSRP media stream.

Fed matched requests, responses and the time; yields frames to send (`pull`),
events (`events`) and deadlines (`next_deadline` / `on_timer`). It never raises
on peer input: bad requests get a precise status and a `RequestRejected` event.
The connection core routes frames to it and owns the bytes.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gw.mime import mime_matches
from gw.msrp.chunks import ByteRange, Reassembler, ReassemblyBudget
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
    SessionBound,
    SessionClosed,
    SessionEvent,
)
from gw.msrp.frame import LOWER_NAMES, REASONS, Frame, make_response, parse_byte_range
from gw.msrp.outgoing import FAILURE_REPORT_VALUES, OutgoingMessage
from gw.msrp.report import make_report, parse_status
from gw.msrp.uri import MsrpUri, format_path, new_transaction_id, parse_msrp_uri, parse_path

__all__ = ["MsrpSession", "to_path"]

_TXN, _REPORT, _EXPIRE = range(3)
_DIRECTIONS = ("sendrecv", "sendonly", "recvonly")
_REMEMBERED = 1024  # incoming message ids kept for REPORTs and repeated rejections
_OVERHEAD = 256  # rough header bytes per frame, for the pull budget
_V = TypeVar("_V")
_CTL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SEQ = itertools.count()  # timer tie-breaker, shared by all sessions: only order matters


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


class MsrpSession:
    """One MSRP session: chunked sending with transaction and report tracking,
    reassembly and answering of incoming SENDs, REPORT generation.

    Containers are created when first needed and dropped again once empty (queues,
    open messages and transactions, timers, events): an idle session holds little
    more than its URIs and settings.
    """

    __slots__ = (
        "_auto_report",
        "_budget",
        "_control",
        "_events",
        "_expire_at",
        "_from_path",
        "_incoming",
        "_incomplete_timeout",
        "_max_message_size",
        "_messages",
        "_reassembler",
        "_rejected",
        "_sending",
        "_timers",
        "_to_path",
        "_txns",
        "accept_types",
        "auto_success_report",
        "chunk_size",
        "closed",
        "connection",
        "direction",
        "local_uri",
        "max_chunk_size",
        "peer_accept_types",
        "peer_max_size",
        "peer_path",
        "report_bound",
        "report_timeout",
        "session_id",
        "transaction_timeout",
    )

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
        reassembly_budget: ReassemblyBudget | None = None,
        report_bound: bool = False,
    ) -> None:
        self.local_uri = local_uri if isinstance(local_uri, MsrpUri) else parse_msrp_uri(local_uri)
        if not self.local_uri.session_id:
            raise ValueError("the local URI needs a session-id")
        self.peer_path = to_path(peer_path)
        if not self.peer_path:
            raise ValueError("the peer path needs at least one URI")
        if chunk_size < 1 or transaction_timeout <= 0 or direction not in _DIRECTIONS:
            raise ValueError("bad chunk_size, transaction_timeout or direction")
        if max_message_size < 0:  # the Reassembler's checks: it is created on first use
            raise ValueError("limits must be positive")
        if incomplete_timeout <= 0:
            raise ValueError("incomplete_timeout must be > 0")
        self.session_id: str = self.local_uri.session_id
        self.accept_types = _shared_types(accept_types)
        self.peer_accept_types = (
            None if peer_accept_types is None else _shared_types(peer_accept_types)
        )
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
        self._max_message_size = max_message_size
        self._incomplete_timeout = incomplete_timeout
        self._budget = reassembly_budget
        self.report_bound = report_bound  # emit SessionBound when a connection carries it
        # Created on first use, dropped when empty (see the class docstring):
        self._reassembler: Reassembler | None = None  # kept once created: it remembers ids
        self._control: deque[Frame] | None = None  # responses, REPORTs, aborts: sent first
        self._sending: deque[OutgoingMessage] | None = None
        self._messages: dict[str, OutgoingMessage] | None = None  # not yet final
        self._txns: dict[str, _Txn] | None = None
        self._timers: list[tuple[float, int, int, str]] | None = None
        self._expire_at: float | None = None
        self._auto_report: str | None = None
        # Least recently used first (plain dicts: half the size of OrderedDicts)
        self._incoming: dict[str, _Incoming] | None = None
        self._rejected: dict[str, tuple[int, str]] | None = None
        self._events: list[SessionEvent] | None = None

    @property
    def lean(self) -> bool:
        """Whether it holds no per-message state: no queued frame, message, transaction or
        event (what an idle session must come back to; tests/msrp/test_lean.py)."""
        return (
            self._control is None
            and self._sending is None
            and self._events is None
            and self._messages is None
            and self._txns is None
        )

    @property
    def peer_uri(self) -> MsrpUri:
        """The peer endpoint (last URI of its path; relays come first)."""
        return self.peer_path[-1]

    def events(self) -> list[SessionEvent]:
        """Take the events reported since the last call."""
        events = self._events
        if events is None:
            return []
        self._events = None
        return events

    def _emit(self, event: SessionEvent) -> None:
        if self._events is None:
            self._events = [event]
        else:
            self._events.append(event)

    def _queue_control(self, frame: Frame) -> None:
        if self._control is None:
            self._control = deque()
        self._control.append(frame)

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
        if not content_type or _CTL_RE.search(content_type):
            raise ValueError(f"bad Content-Type {content_type!r}")
        msg = self._new_message(body, content_type, success_report, failure_report, message_id)
        if self.closed:
            self._fail(msg, 481, "session closed")
        elif self.direction == "recvonly":
            self._fail(msg, 403, "session is receive-only")
        elif self.peer_max_size is not None and msg.size > self.peer_max_size:
            self._fail(msg, 413, f"message exceeds the peer's max-size {self.peer_max_size}")
        elif self.peer_accept_types is not None and not mime_matches(
            content_type, self.peer_accept_types
        ):
            self._fail(msg, 415, "content type not in the peer's accept-types")
        elif self._sending is None:
            self._sending = deque((msg,))
        else:
            self._sending.append(msg)
        return msg

    def send_empty(self, *, first: bool = False) -> OutgoingMessage:
        """Queue a body-less SEND (§5.4 binding, keepalive); `first` puts it ahead."""
        msg = self._new_message(b"", None, None, "yes", None)
        if self.closed:
            self._fail(msg, 481, "session closed")
        elif self._sending is None:
            self._sending = deque((msg,))
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
        messages = self._messages
        if messages is not None and mid in messages:
            raise ValueError(f"Message-ID {mid!r} is already in use")
        msg = OutgoingMessage(
            mid,
            body,
            content_type,
            success_report=success_report,
            failure_report=failure_report,
            chunk_size=self.chunk_size,
        )
        if messages is None:
            self._messages = {mid: msg}
        else:
            messages[mid] = msg
        return msg

    # -- output ------------------------------------------------------------------
    def has_outgoing(self) -> bool:
        return self._control is not None or self._sending is not None

    def pull(self, now: float, budget: int = 1 << 16) -> list[Frame]:
        """Frames to write now, about `budget` bytes: control frames first, then
        chunks round-robin across messages. Transaction timers start here."""
        frames: list[Frame] = []
        control = self._control
        if control is not None:
            while control and budget > 0:
                frame = control.popleft()
                if frame.method == "SEND":  # an abort chunk: absorb its response
                    self._add_txn(frame.tid, _Txn(None, now + self.transaction_timeout))
                frames.append(frame)
                budget -= len(frame.body) + _OVERHEAD
            if not control:
                self._control = None
        sending = self._sending
        if sending is not None:
            while sending and budget > 0:
                msg = sending[0]
                frame = self._chunk_frame(msg, now)
                frames.append(frame)
                budget -= len(frame.body) + _OVERHEAD
                if msg.all_sent:
                    sending.popleft()
                    self._settle(msg, now)
                else:
                    sending.rotate(-1)
            if not sending and self._sending is sending:
                self._sending = None
        return frames

    def _add_txn(self, tid: str, txn: _Txn) -> None:
        if self._txns is None:
            self._txns = {tid: txn}
        else:
            self._txns[tid] = txn

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
            self._add_txn(frame.tid, _Txn(msg, deadline))
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
        sending = self._sending
        if sending is not None and msg in sending:
            sending.remove(msg)
            if not sending:
                self._sending = None
        start = msg.next_start
        if msg.stop():
            headers = self._headers(msg)
            headers.append(("Byte-Range", f"{start}-{start - 1}/{msg.size}"))
            self._queue_control(Frame(new_transaction_id(), "SEND", headers=headers, flag="#"))

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
        messages = self._messages
        if messages is not None:
            messages.pop(msg.message_id, None)
            if not messages:
                self._messages = None
        self._emit(outcome)

    def handle_response(self, frame: Frame, now: float) -> bool:
        """A transaction response; False if it answers no transaction of ours."""
        txns = self._txns
        if txns is None:
            return False
        txn = txns.pop(frame.tid, None)
        if txn is None:
            return False
        if not txns:
            self._txns = None
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
    def handle_request(self, frame: Frame, now: float, replies: deque[Frame] | None = None) -> None:
        """A request already matched to this session (To-Path and From-Path).

        Its response goes to `replies` when given: the queue of the connection it came
        on, when that is not the one the session is bound to (RFC 4975 §7.3 answers a
        request on the connection that carried it). Otherwise to our own output."""
        method = frame.method
        if method == "SEND" and not self.closed:
            fields = _send_fields(frame)
            code, reason = self._on_send(frame, fields, now)
            self._answer(frame, code, reason, _failure_value(fields[_FR]), replies)
            if self._auto_report is not None:  # after the 200, not before it
                self.report_success(self._auto_report)
                self._auto_report = None
        elif method == "REPORT":
            self._on_report(frame)
        elif method != "SEND":
            self._answer(frame, 501, f"{method} not implemented", None, replies)
        else:
            self._answer(frame, 481, "session closed", None, replies)

    def _answer(
        self,
        frame: Frame,
        code: int,
        reason: str,
        failure_report: str | None = None,
        replies: deque[Frame] | None = None,
    ) -> None:
        """Respond per Failure-Report (§7.1.1): yes always, partial on error, no never.
        `failure_report`: the request's, normalised, if the caller has it already."""
        fr = _failure_report(frame) if failure_report is None else failure_report
        answered = fr == "yes" or (fr == "partial" and code != 200)
        if code != 200:
            self._emit(RequestRejected(code, reason, frame.method, frame.message_id, answered))
        if answered:
            comment = None if code == 200 else reason
            response = make_response(frame, code, comment, responder=self.local_uri)
            if replies is None:
                self._queue_control(response)
            else:
                replies.append(response)

    def _on_send(self, frame: Frame, fields: list[str | None], now: float) -> tuple[int, str]:
        mid, ct, body = fields[_MID], fields[_CT], frame.body
        if not mid:
            return 400, "missing Message-ID"
        try:
            br = fields[_BR]
            raw = None if br is None else parse_byte_range(br)
            start, end, total = raw if raw is not None else (1, len(body), len(body))
            byte_range = ByteRange(start, end, total)
        except ValueError:
            return 400, "malformed Byte-Range"
        if not body and ct is None and (raw is None or total == 0):
            return 200, "OK"  # empty SEND (§5.4): binds or keeps alive, delivers nothing
        if self.direction == "sendonly":
            return 403, "session is send-only"
        rejected = self._rejected
        if rejected is not None and mid in rejected:
            return rejected[mid]
        if len(body) > self.max_chunk_size:
            return self._reject(mid, 413, "chunk too large")
        if ct is not None and not mime_matches(ct, self.accept_types):
            return self._reject(mid, 415, f"{ct} not in accept-types")
        if ct is None and body and start == 1:
            return self._reject(mid, 400, "missing Content-Type")
        incoming = self._incoming
        if incoming is None:
            incoming = self._incoming = {}
        info = incoming.get(mid)
        if info is None:
            from_path = frame.from_path
            if from_path == self.peer_path:  # the usual case: keep one copy per session
                from_path = self.peer_path
            info = _Incoming(
                from_path,
                (fields[_SR] or "").lower() == "yes",
                _failure_value(fields[_FR]),
            )
            _remember(incoming, mid, info)
        reassembler = self._reassembler
        if reassembler is None:
            reassembler = self._reassembler = Reassembler(
                self._max_message_size,
                incomplete_timeout=self._incomplete_timeout,
                budget=self._budget,
            )
        result = reassembler.add(mid, byte_range, body, frame.flag, ct, now)
        if result.status != 200:
            return result.status, result.reason
        info.high = max(info.high, start + len(body) - 1)
        info.total = total if total is not None else info.total
        if result.aborted:
            self._emit(IncomingAborted(mid))
        elif result.completed is not None:
            done = result.completed
            info.total, info.complete = done.total, True
            ctype = done.content_type or "application/octet-stream"
            self._emit(
                MessageReceived(mid, ctype, done.body, info.success_report, info.failure_report)
            )
            if self.auto_success_report:
                self._auto_report = mid
        elif self._expire_at is None and len(reassembler):
            self._expire_at = now + reassembler.incomplete_timeout / 2
            self._push(self._expire_at, _EXPIRE, "")
        return 200, "OK"

    def _reject(self, mid: str, code: int, reason: str) -> tuple[int, str]:
        if self._rejected is None:
            self._rejected = {}
        _remember(self._rejected, mid, (code, reason))
        return code, reason

    def _on_report(self, frame: Frame) -> None:
        """REPORTs are never answered (§7.1.2); they settle our outgoing messages."""
        mid, status = frame.message_id, parse_status(frame.header("Status"))
        if not mid or status is None:
            self._emit(RequestRejected(400, "malformed REPORT", "REPORT", mid, False))
            return
        msg = None if self._messages is None else self._messages.get(mid)
        if msg is None or msg.empty or status.namespace != "000":
            why = "unknown message" if msg is None else "not a report we can use"
            self._emit(ReportIgnored(mid, status.code, why))
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
        info = None if self._incoming is None else self._incoming.get(message_id)
        if info is None or not info.success_report or not info.complete or self.closed:
            return False
        total = info.total or 0
        byte_range = ByteRange(1, total, total)
        self._queue_control(
            make_report(info.from_path, self.local_uri, message_id, byte_range, 200)
        )
        return True

    def report_failure(self, message_id: str, code: int, reason: str | None = None) -> bool:
        """Queue a failure REPORT (e.g. downstream delivery failed), unless the
        sender said Failure-Report: no."""
        info = None if self._incoming is None else self._incoming.get(message_id)
        if info is None or info.failure_report == "no" or self.closed:
            return False
        total = info.total
        byte_range = ByteRange(1, total if info.complete and total else info.high, total)
        self._queue_control(
            make_report(info.from_path, self.local_uri, message_id, byte_range, code, reason)
        )
        return True

    # -- time --------------------------------------------------------------------
    def _push(self, deadline: float, kind: int, key: str) -> None:
        entry = (deadline, next(_SEQ), kind, key)
        if self._timers is None:
            self._timers = [entry]
        else:
            heapq.heappush(self._timers, entry)

    def _live(self, deadline: float, kind: int, key: str) -> bool:
        if kind == _TXN:
            txn = None if self._txns is None else self._txns.get(key)
            return txn is not None and txn.deadline == deadline
        if kind == _REPORT:
            msg = None if self._messages is None else self._messages.get(key)
            return msg is not None and msg.report_deadline == deadline
        return self._expire_at == deadline

    def next_deadline(self) -> float | None:
        timers = self._timers
        if timers is None:
            return None
        while timers and not self._live(timers[0][0], timers[0][2], timers[0][3]):
            heapq.heappop(timers)
        if timers:
            return timers[0][0]
        if self._timers is timers:
            self._timers = None
        return None

    def on_timer(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, key = heapq.heappop(timers)
            if not self._live(deadline, kind, key):
                continue
            if kind == _TXN:
                self._txn_timeout(key, now)
            elif kind == _REPORT:
                assert self._messages is not None  # _live found it there
                self._fail(self._messages[key], 408, "no success report")
            else:
                self._expire(now)
        if not timers and self._timers is timers:
            self._timers = None

    def _txn_timeout(self, tid: str, now: float) -> None:
        txns = self._txns
        assert txns is not None  # _live found it there
        msg = txns.pop(tid).message
        if not txns:
            self._txns = None
        if msg is None or msg.outcome is not None:
            return
        msg.in_flight.discard(tid)
        if msg.failure_report == "partial":
            self._settle(msg, now)  # partial: no news is good news
        else:
            self._fail(msg, 408, "transaction timeout")

    def _expire(self, now: float) -> None:
        self._expire_at = None
        reassembler = self._reassembler
        if reassembler is None:
            return
        for mid in reassembler.expire(now):
            self._emit(IncomingExpired(mid))
            info = None if self._incoming is None else self._incoming.get(mid)
            if info is not None and info.failure_report != "no":
                self.report_failure(mid, 408, "message incomplete")
        if len(reassembler):
            self._expire_at = now + reassembler.incomplete_timeout / 2
            self._push(self._expire_at, _EXPIRE, "")

    # -- lifecycle ---------------------------------------------------------------
    def bind(self, connection: object, *, send_empty: bool) -> OutgoingMessage | None:
        """Attach to a connection. The side that opened it must send a SEND at once
        (RFC 4975 §5.4): a message queued already is that SEND (it may carry a body),
        else an empty one goes first (returned)."""
        self.connection = connection
        if self.report_bound:
            self._emit(SessionBound())
        if not send_empty or self._sending:
            return None
        return self.send_empty(first=True)

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
        if self._reassembler is not None:
            self._reassembler.clear()  # partial messages: their bytes back to the budget
        if self._messages is not None:
            for msg in list(self._messages.values()):
                self._fail(msg, code, reason)
        self._sending = None
        if self.connection is None:
            self._control = None
        self._emit(SessionClosed(reason))


_MID, _CT, _BR, _SR, _FR = range(5)
_SEND_FIELDS = {
    "message-id": _MID,
    "content-type": _CT,
    "byte-range": _BR,
    "success-report": _SR,
    "failure-report": _FR,
}


def _send_fields(frame: Frame) -> list[str | None]:
    """Message-ID, Content-Type, Byte-Range, Success-Report and Failure-Report in one
    pass over the headers (the first of each, as `Frame.header` finds it)."""
    fields: list[str | None] = [None, None, None, None, None]
    lower = LOWER_NAMES
    for name, value in frame.headers:
        i = _SEND_FIELDS.get(lower.get(name) or name.lower())
        if i is not None and fields[i] is None:
            fields[i] = value
    return fields


def _failure_value(value: str | None) -> str:
    value = (value or "yes").strip().lower()
    return value if value in FAILURE_REPORT_VALUES else "yes"


_TYPES_CACHE: dict[tuple[str, ...], tuple[str, ...]] = {}


def _shared_types(types: Sequence[str]) -> tuple[str, ...]:
    """One tuple per distinct accept-types list, shared by the sessions that use it."""
    key = tuple(types)
    shared = _TYPES_CACHE.get(key)
    if shared is None:
        if len(_TYPES_CACHE) >= 256:
            _TYPES_CACHE.clear()
        shared = _TYPES_CACHE[key] = key
    return shared


def _failure_report(frame: Frame) -> str:
    return _failure_value(frame.header("Failure-Report"))


def _tid_for(body: bytes) -> str:
    """A transaction id whose end-line cannot occur inside `body`."""
    tid = new_transaction_id()
    while b"-------" + tid.encode() in body:
        tid = new_transaction_id()
    return tid


def _remember(table: dict[str, _V], key: str, value: _V) -> None:
    """Insert as most recently used; forget the least recently used beyond _REMEMBERED."""
    table.pop(key, None)
    table[key] = value
    while len(table) > _REMEMBERED:
        del table[next(iter(table))]
