"""MSRP frames (RFC 4975 §7, §9): model, serializer, transaction responses and parser.

Sans-I/O: `FrameParser.feed` turns bytes into events; the caller owns the socket.
Responses are hop-by-hop and are never sent for REPORT requests: check
`frame.method == "REPORT"` (and `make_response` refuses them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gw.msrp.uri import MsrpUri, format_path, new_transaction_id, parse_path

__all__ = [
    "FLAGS",
    "REASONS",
    "Event",
    "Frame",
    "FrameError",
    "FrameParser",
    "FrameReceived",
    "make_response",
    "parse_byte_range",
    "serialize",
]

FLAGS = "+$#"
"""Continuation flags: '+' more chunks follow, '$' last chunk, '#' message aborted."""

REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    408: "Request Timeout",
    413: "Message Too Large",
    415: "Unsupported Media Type",
    423: "Interval Out Of Bounds",
    481: "Session Does Not Exist",
    501: "Not Implemented",
    506: "Session Already Bound",
}
"""Default comments for the RFC 4975 status codes."""

_TID = rb"[A-Za-z0-9][A-Za-z0-9.\-+%=]{0,63}"  # ident, lenient on length
_TID_STR_RE = re.compile(_TID.decode())
_START_RE = re.compile(rb"MSRP (" + _TID + rb") (.*)", re.S)
_TID_LINE_RE = re.compile(rb"MSRP (" + _TID + rb")(?: |\Z)")
_TID_PARTIAL_RE = re.compile(rb"MSRP (" + _TID + rb") ")
_STATUS_RE = re.compile(rb"([0-9]{3})(?: (.*))?", re.S)
_METHOD_RE = re.compile(rb"[A-Z]+")
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+"
_NAME_RE = re.compile(_TOKEN)
_NAME_BYTES_RE = re.compile(_TOKEN.encode())
_CTL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BYTE_RANGE_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,19}|\*)/([0-9]{1,19}|\*)")
_MSRP_SP = b"MSRP "
_FLAG_BYTES = FLAGS.encode()
_STEP = 8192  # input is appended in steps this big, bounding the buffer overshoot
_KNOWN = (
    "To-Path",
    "From-Path",
    "Message-ID",
    "Byte-Range",
    "Content-Type",
    "Success-Report",
    "Failure-Report",
    "Status",
    "Use-Path",
    "Expires",
    "Min-Expires",
    "Max-Expires",
    "Authorization",
    "WWW-Authenticate",
    "Authentication-Info",
)
LOWER_NAMES = {name: name.lower() for name in _KNOWN}
"""Lower-case forms of the usual header names, as spelled in RFC 4975/4976: a dict
look-up instead of `str.lower` on the hot paths (names not in it: `str.lower`)."""
_NAMES_BY_BYTES = {name.encode(): name for name in _KNOWN}  # the parser shares these


@dataclass(slots=True)
class Frame:
    """One MSRP request (`method` set) or response (`status` set).

    Headers keep wire order and spelling, unknown ones included, so frames
    can be relayed or logged faithfully.
    """

    tid: str
    method: str | None
    status: int | None = None
    comment: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    flag: str = "$"

    @classmethod
    def request(
        cls,
        method: str,
        to_path: Sequence[MsrpUri],
        from_path: Sequence[MsrpUri],
        *,
        tid: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        flag: str = "$",
    ) -> Frame:
        """Build a request; a body needs `content_type` (RFC 4975 §7.1)."""
        hdrs = [("To-Path", format_path(to_path)), ("From-Path", format_path(from_path))]
        hdrs += headers
        if content_type is not None:
            hdrs.append(("Content-Type", content_type))
        elif body:
            raise ValueError("a request with a body needs a Content-Type")
        return cls(tid or new_transaction_id(), method, headers=hdrs, body=body, flag=flag)

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        lower = LOWER_NAMES
        lname = lower.get(name) or name.lower()
        for k, v in self.headers:
            if k == name or (lower.get(k) or k.lower()) == lname:
                return v
        return None

    @property
    def to_path(self) -> tuple[MsrpUri, ...]:
        """Parsed To-Path (empty if absent); raises MsrpUriError if malformed."""
        raw = self.header("To-Path")
        return () if raw is None else parse_path(raw)

    @property
    def from_path(self) -> tuple[MsrpUri, ...]:
        """Parsed From-Path (empty if absent); raises MsrpUriError if malformed."""
        raw = self.header("From-Path")
        return () if raw is None else parse_path(raw)

    @property
    def message_id(self) -> str | None:
        return self.header("Message-ID")

    @property
    def content_type(self) -> str | None:
        return self.header("Content-Type")

    @property
    def byte_range(self) -> tuple[int, int | None, int | None] | None:
        """(start, end, total), None for '*'; None if absent (the whole message in
        one chunk); ValueError if malformed (never for parsed frames)."""
        raw = self.header("Byte-Range")
        return None if raw is None else parse_byte_range(raw)


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A complete, well-formed frame (one chunk; reassembly is the caller's job)."""

    frame: Frame


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame that could not be accepted.

    `request` is the start line plus the well-formed headers (empty body,
    flag '$') when the start line was readable, so a caller can answer with
    `code` (unless it is a response or a REPORT). `fatal` means framing is
    lost: the parser stops and the connection must be closed.
    """

    tid: str | None
    code: int
    reason: str
    request: Frame | None
    fatal: bool


Event = FrameReceived | FrameError


def parse_byte_range(value: str) -> tuple[int, int | None, int | None]:
    """Parse `start-end/total` ('*' -> None); ValueError if malformed or inconsistent."""
    m = _BYTE_RANGE_RE.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"malformed Byte-Range {value!r}")
    start = int(m[1])
    end = None if m[2] == "*" else int(m[2])
    total = None if m[3] == "*" else int(m[3])
    if start < 1 or (end is not None and (end < start - 1 or (total is not None and end > total))):
        raise ValueError(f"inconsistent Byte-Range {value!r}")
    return start, end, total


def make_response(
    request: Frame, status: int, comment: str | None = None, *, responder: MsrpUri | None = None
) -> Frame:
    """Transaction response per RFC 4975 §7.2 (hop-by-hop).

    To-Path is the previous hop only (first URI of the request's From-Path);
    From-Path is the responder: `responder`, else the first URI of the
    request's To-Path. Raises ValueError for responses and for REPORT
    requests, which must never be answered.
    """
    if request.method is None:
        raise ValueError("responses are not answered")
    if request.method == "REPORT":
        raise ValueError("REPORT requests are never answered")
    prev_hop, local = request.from_path, request.to_path
    if not prev_hop or not local:
        raise ValueError("request lacks To-Path or From-Path")
    me = responder if responder is not None else local[0]
    text = REASONS.get(status) if comment is None else comment
    headers = [("To-Path", str(prev_hop[0])), ("From-Path", str(me))]
    return Frame(request.tid, None, status, text, headers)


def serialize(frame: Frame) -> bytes:
    """Wire form: To-Path, From-Path, other headers, Content-Type last, body, end-line.

    Raises ValueError for frames that cannot be framed safely: bad tid, method,
    status or flag, control characters in headers or comment (injection), or a
    body containing its own end-line (pick another tid).
    """
    _check(frame)
    tid = frame.tid
    if frame.method is not None:
        start = f"MSRP {tid} {frame.method}\r\n"
    elif frame.comment is not None:
        start = f"MSRP {tid} {frame.status:03d} {frame.comment}\r\n"
    else:
        start = f"MSRP {tid} {frame.status:03d}\r\n"
    headers = frame.headers
    if len(headers) > 1:
        headers = sorted(headers, key=_header_rank)
    head = (start + "".join([f"{k}: {v}\r\n" for k, v in headers])).encode()
    btid = tid.encode()
    end = b"-------" + btid + frame.flag.encode() + b"\r\n"
    body = frame.body
    if not body and frame.content_type is None:
        return head + end
    prefix = b"\r\n-------" + btid
    if (
        body.startswith(prefix[2:])
        or prefix in body
        or prefix in body[1 - len(prefix) :] + prefix[:-1]
    ):
        # CRLF '-------' tid occurs before the real end-line: a problem unless what
        # follows it cannot be read as a flag and CRLF.
        tail = b"".join((b"\r\n", body, b"\r\n", end))
        if _find_end(tail, prefix, 0)[0] != len(body) + 2:
            raise ValueError("body contains the frame's end-line; use another transaction id")
    return b"".join((head, b"\r\n", body, b"\r\n", end))


_RANKS = {"to-path": 0, "from-path": 1, "content-type": 3}
_KNOWN_NAMES = frozenset(_KNOWN)
_KNOWN_METHODS = frozenset(("SEND", "REPORT", "AUTH"))


def _header_rank(header: tuple[str, str]) -> int:
    name = header[0]
    return _RANKS.get(LOWER_NAMES.get(name) or name.lower(), 2)


def _check(frame: Frame) -> None:
    if not _TID_STR_RE.fullmatch(frame.tid):
        raise ValueError(f"bad transaction id {frame.tid!r}")
    method = frame.method
    if method is not None:
        if frame.status is not None or (
            method not in _KNOWN_METHODS and not _METHOD_RE.fullmatch(method.encode())
        ):
            raise ValueError(f"bad method {method!r}")
    elif frame.status is None or not 0 <= frame.status <= 999:
        raise ValueError(f"bad status {frame.status!r}")
    if frame.comment is not None and _CTL_RE.search(frame.comment):
        raise ValueError("control character in comment")
    if len(frame.flag) != 1 or frame.flag not in FLAGS:
        raise ValueError(f"bad flag {frame.flag!r}")
    headers = frame.headers
    # One search over all values (TAB, the only control character allowed, joins them),
    # then the names; the per-header loop only runs to name the culprit.
    if _CTL_RE.search("\t".join([v for _, v in headers])) or not all(
        [k in _KNOWN_NAMES or _NAME_RE.fullmatch(k) for k, _ in headers]
    ):
        for name, value in headers:
            if not _NAME_RE.fullmatch(name) or _CTL_RE.search(value):
                raise ValueError(f"bad header {name!r}")


def _find_end(buf: bytes | bytearray, prefix: bytes, start: int) -> tuple[int, int]:
    """Find CRLF '-------' tid flag CRLF (`prefix` is the part up to tid).

    Returns (index, resume): index of the first complete end-line at or after
    `start`, or -1 and the offset where a later search must resume (nothing
    before it can begin an end-line), so each byte is scanned about once.
    """
    pos, size, plen = start, len(buf), len(prefix)
    while True:
        i = buf.find(prefix, pos)
        if i < 0:
            return -1, max(pos, size - plen + 1)
        tail = buf[i + plen : i + plen + 3]
        if tail and (tail[0] not in _FLAG_BYTES or not b"\r\n".startswith(tail[1:])):
            pos = i + 1  # same tid followed by something else: body data
        elif len(tail) == 3:
            return i, i
        else:
            return -1, i


@dataclass(slots=True)
class _Head:
    tid: str
    method: str | None
    status: int | None
    comment: str | None
    headers: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0
    error: str | None = None

    def frame(self, flag: str = "$") -> Frame:
        """Headers-only frame (also what FrameError.request carries)."""
        headers = list(self.headers)
        return Frame(self.tid, self.method, self.status, self.comment, headers, flag=flag)


def _header_line(head: _Head, line: bytes) -> None:
    """`name: value` (value without surrounding blanks) into `head`, or note the error.
    Same result as a full match of rb"(token):[ \t]*(.*?)[ \t]*" (re.S), without that
    regex's slow backtracking over the value."""
    raw_name, colon, raw_value = line.partition(b":")
    name = _NAMES_BY_BYTES.get(raw_name)
    if name is None and colon and _NAME_BYTES_RE.fullmatch(raw_name):
        name = raw_name.decode()
    try:
        if name is None or not colon:
            raise ValueError
        value = raw_value.strip(b" \t").decode()
    except ValueError:
        head.error = head.error or "malformed header"
        return
    if _CTL_RE.search(value):
        head.error = head.error or "malformed header"
    else:
        head.headers.append((name, value))


_HEAD, _BODY, _SKIP, _DEAD = range(4)


class FrameParser:
    """Incremental MSRP parser: `feed(bytes) -> events`, identical for any split.

    The end-line is only recognised with the frame's own transaction id. A
    chunk over max_chunk_size or a header section over max_header_bytes gives
    a non-fatal 413; more than max_headers headers, bad syntax or missing or
    malformed To-Path/From-Path/Byte-Range give a non-fatal 400. After a
    non-fatal error the rest of that frame is discarded up to its end-line.
    Without a readable tid framing is lost: a fatal 400, after which the
    parser ignores all input and the connection must be closed.
    Buffering stays under max(max_chunk_size, max_header_bytes) + ~8 KiB.
    """

    def __init__(
        self, max_chunk_size: int = 1 << 20, max_header_bytes: int = 16384, max_headers: int = 64
    ) -> None:
        if max_chunk_size < 0 or max_header_bytes < 256 or max_headers < 2:
            raise ValueError("limits too small")
        self.max_chunk_size = max_chunk_size
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._buf = bytearray()
        self._state = _HEAD
        self._head: _Head | None = None
        self._pending: Frame | None = None  # body state: the frame being completed
        self._prefix = b""  # CRLF + "-------" + tid of the current frame
        self._cursor = 0  # head: start of the next unread line
        self._crlf_from = 0  # head: where the CRLF search resumes
        self._scan = 0  # body/skip: where the end-line search resumes

    @property
    def closed(self) -> bool:
        """True after a fatal error."""
        return self._state == _DEAD

    @property
    def buffered(self) -> int:
        """Bytes currently held (for metrics and tests)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Event]:
        """Consume `data`; return the events it completes. Never raises on bad input."""
        events: list[Event] = []
        view = memoryview(data)
        for off in range(0, len(view), _STEP):
            if self._state == _DEAD:
                break
            self._buf += view[off : off + _STEP]
            while self._step(events):
                pass
        return events

    def _step(self, events: list[Event]) -> bool:
        if self._state == _HEAD:
            return self._step_head(events)
        if self._state == _BODY:
            return self._step_body(events)
        if self._state == _SKIP:
            return self._step_skip()
        return False

    def _step_head(self, events: list[Event]) -> bool:
        """Consume the start line and header lines available (a loop, not one call
        per line: most frames arrive whole)."""
        buf = self._buf
        if not buf:  # all consumed (the cursor is 0 then): wait for more
            return False
        if self._head is None and buf[:5] != _MSRP_SP[: len(buf[:5])]:
            return self._fatal(events)
        max_header_bytes = self.max_header_bytes
        while True:
            nl = buf.find(b"\r\n", self._crlf_from)
            if nl < 0:
                self._crlf_from = max(self._cursor, len(buf) - 1)
                return len(buf) > max_header_bytes and self._overflow(
                    events, 413, "headers too large"
                )
            if nl + 2 > max_header_bytes:
                return self._overflow(events, 413, "headers too large")
            line = bytes(buf[self._cursor : nl])
            head = self._head
            if head is None:
                self._cursor = self._crlf_from = nl + 2
                self._start_line(line, events)
                if self._head is None:  # refused: skipping, or framing lost
                    return True
                if self._header_block(self._head, events):
                    return True
                continue
            end_line = bool(line) and self._is_end_line(line)
            if line and not end_line:
                if head.count >= self.max_headers:
                    return self._overflow(events, 400, "too many headers")
                head.count += 1
            self._cursor = self._crlf_from = nl + 2
            if not line:
                self._end_head(events, body=True)
                return True
            if end_line:
                self._end_head(events, body=False, flag=chr(line[-1]))
                return True
            _header_line(head, line)

    def _header_block(self, head: _Head, events: list[Event]) -> bool:
        """Fast path, once per frame right after its start line: when the line that
        ends the head (blank, or the end-line) is already buffered, split the header
        lines before it in one go. The loop in `_step_head` then handles the end of
        the head, exactly as it would have line by line. True if the head was refused
        (too many headers)."""
        buf, cursor = self._buf, self._cursor
        stop = min(len(buf), self.max_header_bytes)
        end = buf.find(b"\r\n\r\n", cursor - 2, stop)
        end_line = buf.find(self._prefix, cursor - 2, stop if end < 0 else end + 2)
        if end_line >= 0:
            end = end_line
        if end <= cursor:  # not buffered yet (or no header line): line by line
            return False
        # No line before `end` is blank or starts like the end-line: all are headers.
        max_headers = self.max_headers
        for line in bytes(buf[cursor:end]).split(b"\r\n"):
            if head.count >= max_headers:
                self._cursor = self._crlf_from = cursor
                return self._overflow(events, 400, "too many headers")
            head.count += 1
            cursor += len(line) + 2
            _header_line(head, line)
        self._cursor = self._crlf_from = cursor
        return False

    def _is_end_line(self, line: bytes) -> bool:
        prefix = self._prefix
        return (
            len(line) == len(prefix) - 1 and line.startswith(prefix[2:]) and line[-1] in _FLAG_BYTES
        )

    def _start_line(self, line: bytes, events: list[Event]) -> None:
        m = _START_RE.fullmatch(line)
        if m is None:
            t = _TID_LINE_RE.match(line)
            if t is None:
                self._fatal(events)
            else:
                self._error(
                    events, t[1].decode(), 400, "malformed start line", None, self._cursor - 2
                )
            return
        tid, rest = m[1].decode(), m[2]
        self._prefix = b"\r\n-------" + m[1]
        status = _STATUS_RE.fullmatch(rest)
        if status is not None:
            comment = None if status[2] is None else status[2].decode("utf-8", "replace")
            if comment is not None and _CTL_RE.search(comment):
                self._error(events, tid, 400, "malformed start line", None, self._cursor - 2)
                return
            self._head = _Head(tid, None, int(status[1]), comment)
        elif _METHOD_RE.fullmatch(rest):
            self._head = _Head(tid, rest.decode(), None, None)
        else:
            self._error(events, tid, 400, "malformed start line", None, self._cursor - 2)

    def _end_head(self, events: list[Event], *, body: bool, flag: str = "$") -> None:
        assert self._head is not None
        head = self._head
        # The frame takes the head's header list (the head is dropped with the frame;
        # error reports get copies from `head.frame()`).
        frame = Frame(head.tid, head.method, head.status, head.comment, head.headers, flag=flag)
        error = head.error or _validate(frame)
        keep_from = self._cursor - 2 if body else self._cursor
        if error is not None and body:
            self._error(events, head.tid, 400, error, head.frame(), keep_from)
        elif error is not None:
            events.append(FrameError(head.tid, 400, error, head.frame(), False))
            self._reset(keep_from)
        elif body:
            self._state = _BODY
            self._pending = frame
            del self._buf[:keep_from]
            self._scan = 0
        else:
            events.append(FrameReceived(frame))
            self._reset(self._cursor)

    def _step_body(self, events: list[Event]) -> bool:
        assert self._head is not None
        buf = self._buf
        i, self._scan = _find_end(buf, self._prefix, self._scan)
        if i < 0:
            if self._scan - 2 <= self.max_chunk_size:
                return False
            head = self._head
            self._error(events, head.tid, 413, "chunk too large", head.frame(), self._scan)
            return True
        if i - 2 > self.max_chunk_size:
            events.append(
                FrameError(self._head.tid, 413, "chunk too large", self._head.frame(), False)
            )
        elif self._pending is not None:
            self._pending.body = bytes(buf[2:i])
            self._pending.flag = chr(buf[i + len(self._prefix)])
            events.append(FrameReceived(self._pending))
        self._reset(i + len(self._prefix) + 3)
        return True

    def _step_skip(self) -> bool:
        i, self._scan = _find_end(self._buf, self._prefix, self._scan)
        if i < 0:
            del self._buf[: self._scan]
            self._scan = 0
            return False
        self._reset(i + len(self._prefix) + 3)
        return True

    def _error(
        self,
        events: list[Event],
        tid: str,
        code: int,
        reason: str,
        request: Frame | None,
        keep_from: int,
    ) -> None:
        """Report a non-fatal error and discard input up to this frame's end-line."""
        events.append(FrameError(tid, code, reason, request, False))
        self._prefix = b"\r\n-------" + tid.encode()
        self._state = _SKIP
        del self._buf[: max(0, keep_from)]
        self._scan = 0

    def _overflow(self, events: list[Event], code: int, reason: str) -> bool:
        head = self._head
        if head is not None:
            self._error(events, head.tid, code, reason, head.frame(), self._cursor - 2)
            return True
        t = _TID_PARTIAL_RE.match(self._buf)
        if t is None:
            return self._fatal(events)
        self._error(events, t[1].decode(), code, reason, None, 0)
        return True

    def _fatal(self, events: list[Event]) -> bool:
        events.append(FrameError(None, 400, "malformed start line", None, True))
        self._state = _DEAD
        self._buf.clear()
        return False

    def _reset(self, consumed: int) -> None:
        del self._buf[:consumed]
        self._state = _HEAD
        self._head = self._pending = None
        self._cursor = self._crlf_from = self._scan = 0


def _validate(frame: Frame) -> str | None:
    """Reason a syntactically clean frame is still unacceptable, or None."""
    to_path = from_path = byte_range = None
    lower = LOWER_NAMES
    for name, value in frame.headers:  # the first of each, as Frame.header finds it
        lname = lower.get(name) or name.lower()
        if lname == "to-path":
            to_path = value if to_path is None else to_path
        elif lname == "from-path":
            from_path = value if from_path is None else from_path
        elif lname == "byte-range":
            byte_range = value if byte_range is None else byte_range
    if to_path is None:
        return "missing To-Path"
    try:
        parse_path(to_path)
    except ValueError:
        return "malformed To-Path"
    if from_path is None:
        return "missing From-Path"
    try:
        parse_path(from_path)
    except ValueError:
        return "malformed From-Path"
    if byte_range is not None:
        try:
            parse_byte_range(byte_range)
        except ValueError:
            return "malformed Byte-Range"
    return None
