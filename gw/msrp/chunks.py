"""MSRP chunking (RFC 4975 §5.1, §7.1, §9.1.3): Byte-Range, splitting, reassembly.

Sans-I/O: time is passed in as ``now``. One :class:`Reassembler` per MSRP session
and direction, because Message-IDs are only unique per sender within a session.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

OK = 200
BAD_REQUEST = 400
TOO_LARGE = 413  # RFC 4975: "stop sending this message"; the sender then aborts it.

FLAG_END = "$"
FLAG_CONTINUE = "+"
FLAG_ABORT = "#"

_BYTE_RANGE_RE = re.compile(r"([0-9]{1,20})-([0-9]{1,20}|\*)/([0-9]{1,20}|\*)", re.ASCII)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """``start-end/total`` (1-based, inclusive); ``None`` stands for ``*``.

    Raises ValueError when inconsistent, so every instance can be trusted.
    """

    start: int
    end: int | None
    total: int | None

    def __post_init__(self) -> None:
        s, e, t = self.start, self.end, self.total
        if s < 1 or (e is not None and e < s - 1) or (t is not None and t < 0):
            raise ValueError(f"inconsistent Byte-Range {s}-{e}/{t}")
        if t is not None and ((e is not None and e > t) or s > t + 1):
            raise ValueError(f"Byte-Range {s}-{e}/{t} exceeds total")

    def __str__(self) -> str:
        return format_byte_range(self)


def parse_byte_range(value: str) -> ByteRange | None:
    """Parse a Byte-Range header value; None when malformed or inconsistent."""
    m = _BYTE_RANGE_RE.fullmatch(value.strip(" \t"))
    if m is None:
        return None
    end = None if m[2] == "*" else int(m[2])
    total = None if m[3] == "*" else int(m[3])
    try:
        return ByteRange(int(m[1]), end, total)
    except ValueError:
        return None


def format_byte_range(byte_range: ByteRange) -> str:
    """Render a ByteRange as a header value, ``*`` for unknown end/total."""
    end = "*" if byte_range.end is None else str(byte_range.end)
    total = "*" if byte_range.total is None else str(byte_range.total)
    return f"{byte_range.start}-{end}/{total}"


class MessageTooLarge(ValueError):
    """Body exceeds the peer's a=max-size (RFC 4975 §8.6); map to 413 before sending."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes exceeds max-size {limit}")
        self.size = size
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Chunk:
    """One outgoing chunk; ``data`` is a zero-copy view into the caller's body."""

    start: int
    end: int
    total: int
    data: memoryview
    last: bool

    @property
    def byte_range(self) -> ByteRange:
        return ByteRange(self.start, self.end, self.total)

    @property
    def flag(self) -> str:
        return FLAG_END if self.last else FLAG_CONTINUE


def split_message(
    body: bytes | memoryview, chunk_size: int = 2048, max_size: int | None = None
) -> Iterator[Chunk]:
    """Split ``body`` into chunks of at most ``chunk_size`` bytes.

    Validates eagerly (not on first ``next``): ValueError for chunk_size < 1 or a
    non-contiguous buffer, MessageTooLarge when ``len(body) > max_size``.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    try:
        view = memoryview(body).cast("B")
    except TypeError as exc:
        raise ValueError("body must be a contiguous buffer") from exc
    total = len(view)
    if max_size is not None and total > max_size:
        raise MessageTooLarge(total, max_size)
    return _chunks(view, total, chunk_size)


def _chunks(view: memoryview, total: int, chunk_size: int) -> Iterator[Chunk]:
    if total == 0:
        yield Chunk(1, 0, 0, view, True)
        return
    for off in range(0, total, chunk_size):
        end = min(off + chunk_size, total)
        yield Chunk(off + 1, end, total, view[off:end], end == total)


@dataclass(frozen=True, slots=True)
class CompletedMessage:
    message_id: str
    content_type: str | None
    body: bytes
    total: int


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of one SEND chunk; ``status`` is its transaction response code."""

    status: int
    completed: CompletedMessage | None = None
    aborted: bool = False
    reason: str = ""


@dataclass(slots=True)
class _Pending:
    total: int | None
    last_seen: float
    content_type: str | None = None
    buf: bytearray = field(default_factory=bytearray)  # the bytes from 1, as far as they go
    ahead: dict[int, bytes] | None = None  # chunks past a gap, by 0-based offset
    held: int = 0  # bytes held (buf + ahead), as charged to the budget
    ranges: list[tuple[int, int]] = field(default_factory=list)  # merged, 1-based inclusive

    def store(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Keep `data` at `offset`: memory grows with the bytes that arrive, never with
        what a Byte-Range declares (a first chunk `1-1/65536` holds one byte, not 64 KiB)."""
        buf = self.buf
        if offset > len(buf):  # past a gap: kept apart until the gap fills
            parked = self.ahead if self.ahead is not None else {}
            old = parked.get(offset)
            if old is None or len(old) < len(data):
                parked[offset] = bytes(data)
            self.ahead = parked
        else:
            _write(buf, offset, data)
            waiting = self.ahead
            while waiting:  # chunks the prefix now reaches
                reached = sorted(o for o in waiting if o <= len(buf))
                if not reached:
                    break
                for o in reached:
                    _write(buf, o, waiting.pop(o))
            if waiting is not None and not waiting:
                self.ahead = None
        self.held = len(buf) + (sum(map(len, self.ahead.values())) if self.ahead else 0)


class ReassemblyBudget:
    """Bytes held in reassembly by every session of a node together (`max_bytes`): a chunk
    that would pass it gets 413, so many sessions each within their own limits cannot add
    up to the node's memory (issue 16: 150 sessions, 2.3 MiB sent, +606 MiB RSS)."""

    __slots__ = ("held", "max_bytes", "refused")

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = max_bytes
        self.held = 0
        self.refused = 0  # chunks refused for it


def _add_range(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Insert [start, end] into sorted disjoint ranges, merging overlaps and neighbours."""
    if end < start:
        return
    lo = bisect_left(ranges, start - 1, key=lambda r: r[1])
    hi = lo
    while hi < len(ranges) and ranges[hi][0] <= end + 1:
        start, end = min(start, ranges[hi][0]), max(end, ranges[hi][1])
        hi += 1
    ranges[lo:hi] = [(start, end)]


def _write(buf: bytearray, offset: int, data: bytes | bytearray | memoryview) -> None:
    """Write at ``offset``, growing ``buf`` only as far as the data reaches."""
    if offset + len(data) <= len(buf):
        buf[offset : offset + len(data)] = data
    elif offset <= len(buf):
        buf[offset:] = data
    else:
        buf += bytes(offset - len(buf))
        buf += data


class Reassembler:
    """Reassembles chunked SENDs keyed by Message-ID, within memory and time bounds.

    Errors drop the message's state and are remembered (with completions and aborts)
    in a bounded LRU, so retransmitted or late chunks never deliver twice and keep
    getting the same answer. A new message beyond ``max_pending_messages`` gets 413:
    MSRP has no 503, and 413 makes the sender abort just that message.
    """

    __slots__ = (
        "_finished",
        "_pending",
        "budget",
        "incomplete_timeout",
        "max_finished_ids",
        "max_message_size",
        "max_pending_messages",
    )

    def __init__(
        self,
        max_message_size: int = 10 * 1024 * 1024,
        max_pending_messages: int = 64,
        incomplete_timeout: float = 60.0,
        *,
        max_finished_ids: int = 1024,
        budget: ReassemblyBudget | None = None,
    ) -> None:
        if max_message_size < 0 or max_pending_messages < 1 or max_finished_ids < 1:
            raise ValueError("limits must be positive")
        if incomplete_timeout <= 0:
            raise ValueError("incomplete_timeout must be > 0")
        self.max_message_size = max_message_size
        self.max_pending_messages = max_pending_messages
        self.incomplete_timeout = incomplete_timeout
        self.max_finished_ids = max_finished_ids
        self.budget = budget  # shared by the node's sessions; None: no node-wide bound
        self._pending: dict[str, _Pending] = {}
        # message_id -> (status for later chunks, total if completed); least recently
        # used first (a plain dict: half the size of an OrderedDict per idle session)
        self._finished: dict[str, tuple[int, int | None]] = {}

    def __len__(self) -> int:
        """Number of incomplete messages held."""
        return len(self._pending)

    def add(
        self,
        message_id: str,
        byte_range: ByteRange,
        data: bytes | bytearray | memoryview,
        flag: str,
        content_type: str | None,
        now: float,
    ) -> AddResult:
        """Take one chunk; never raises on bad input (returns 400/413 instead)."""
        if not message_id or flag not in (FLAG_END, FLAG_CONTINUE, FLAG_ABORT):
            return AddResult(BAD_REQUEST, reason="bad Message-ID or continuation flag")
        done = self._finished.get(message_id)
        if done is not None:  # retransmission, late chunk, or the sender aborting after 413
            del self._finished[message_id]  # most recently used again
            self._finished[message_id] = done
            status = OK if flag == FLAG_ABORT else done[0]
            return AddResult(status, reason="message already finished")
        if flag == FLAG_ABORT:
            self._drop(message_id)
            self._finish(message_id, OK, None)
            return AddResult(OK, aborted=True)

        start, n = byte_range.start, len(data)
        end = start + n - 1  # actual end: an interrupted '+' chunk may be shorter than declared
        declared = None if byte_range.end is None else byte_range.end - start + 1
        if declared is not None and (n > declared or (flag == FLAG_END and n != declared)):
            return self._fail(message_id, BAD_REQUEST, "body length disagrees with Byte-Range")

        entry = self._pending.get(message_id)
        total = byte_range.total
        if entry is not None and entry.total is not None:
            if total is not None and total != entry.total:
                return self._fail(message_id, BAD_REQUEST, "total changed between chunks")
            total = entry.total
        if flag == FLAG_END:
            if total is None:
                total = end  # RFC 4975 §7.3.1: the '$' chunk fixes an unknown total
            elif end != total:
                return self._fail(message_id, BAD_REQUEST, "last chunk does not end at total")
        high = entry.ranges[-1][1] if entry is not None and entry.ranges else 0
        if total is not None and max(end, high) > total:
            return self._fail(message_id, BAD_REQUEST, "bytes beyond total")
        if max(total or 0, end, byte_range.end or 0) > self.max_message_size:
            return self._fail(message_id, TOO_LARGE, "message exceeds max size")

        if entry is None:
            if start == 1 and total == n:  # whole message in one chunk: no buffering
                body = data if type(data) is bytes else bytes(data)
                self._finish(message_id, OK, total)
                return AddResult(OK, CompletedMessage(message_id, content_type, body, total))
            if len(self._pending) >= self.max_pending_messages:
                return self._fail(message_id, TOO_LARGE, "too many incomplete messages")
            entry = _Pending(total, now)
            self._pending[message_id] = entry

        budget = self.budget
        if budget is not None and budget.held + n > budget.max_bytes:
            budget.refused += 1
            return self._fail(message_id, TOO_LARGE, "reassembly memory full")
        entry.total = total
        entry.last_seen = now
        if entry.content_type is None:
            entry.content_type = content_type
        before = entry.held
        entry.store(start - 1, data)
        if budget is not None:
            budget.held += entry.held - before
        _add_range(entry.ranges, start, end)
        if total is None or (total > 0 and entry.ranges != [(1, total)]):
            return AddResult(OK)
        self._drop(message_id)
        self._finish(message_id, OK, total)
        body = bytes(entry.buf)
        return AddResult(OK, CompletedMessage(message_id, entry.content_type, body, total))

    def expire(self, now: float) -> list[str]:
        """Drop messages idle for ``incomplete_timeout``; caller sends failure reports.

        Late chunks of an expired message then get 413 so the sender stops.
        """
        stale = [
            mid for mid, p in self._pending.items() if now - p.last_seen >= self.incomplete_timeout
        ]
        for mid in stale:
            self._drop(mid)
            self._finish(mid, TOO_LARGE, None)
        return stale

    def clear(self) -> None:
        """Drop every incomplete message (the session ended): their bytes go back to the
        budget."""
        for mid in list(self._pending):
            self._drop(mid)

    def received_ranges(self, message_id: str) -> list[tuple[int, int]]:
        """Contiguous received ``(start, end)`` byte runs (1-based), for partial reports."""
        entry = self._pending.get(message_id)
        if entry is not None:
            return list(entry.ranges)
        done = self._finished.get(message_id)
        if done is not None and done[1]:
            return [(1, done[1])]
        return []

    def _fail(self, message_id: str, status: int, reason: str) -> AddResult:
        self._drop(message_id)
        self._finish(message_id, status, None)
        return AddResult(status, reason=reason)

    def _drop(self, message_id: str) -> None:
        entry = self._pending.pop(message_id, None)
        if entry is not None and self.budget is not None:
            self.budget.held -= entry.held

    def _finish(self, message_id: str, status: int, total: int | None) -> None:
        finished = self._finished
        finished.pop(message_id, None)  # (re)inserted last: most recently used
        finished[message_id] = (status, total)
        while len(finished) > self.max_finished_ids:
            del finished[next(iter(finished))]
