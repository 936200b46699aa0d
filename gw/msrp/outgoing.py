"""State of one message we send: chunk cursor, open transactions, report coverage.

Owned and mutated by `MsrpSession`; callers hold it as a handle (`message_id`,
`outcome`) and may pass it to `MsrpSession.abort`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from gw.msrp.chunks import Chunk, split_message
from gw.msrp.events import Outcome

__all__ = ["FAILURE_REPORT_VALUES", "OutgoingMessage", "check_message_id"]

FAILURE_REPORT_VALUES = ("yes", "no", "partial")
_IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}")


def check_message_id(message_id: str) -> str:
    """Message-ID is an `ident` (RFC 4975 §9): 4-32 characters."""
    if not _IDENT_RE.fullmatch(message_id):
        raise ValueError(f"bad Message-ID {message_id!r}")
    return message_id


class OutgoingMessage:
    """Handle for one outgoing message; `outcome` is set exactly once."""

    __slots__ = (
        "_chunks",
        "_covered",
        "all_sent",
        "chunks_sent",
        "content_type",
        "failure_report",
        "in_flight",
        "message_id",
        "next_start",
        "outcome",
        "report_deadline",
        "size",
        "success_report",
    )

    def __init__(
        self,
        message_id: str,
        body: bytes | memoryview,
        content_type: str | None,
        *,
        success_report: bool | None,
        failure_report: str,
        chunk_size: int,
    ) -> None:
        if failure_report not in FAILURE_REPORT_VALUES:
            raise ValueError(f"Failure-Report must be one of {FAILURE_REPORT_VALUES}")
        self.message_id = check_message_id(message_id)
        self.content_type = content_type
        self.success_report = success_report
        self.failure_report = failure_report
        self.outcome: Outcome | None = None
        self._chunks: Iterator[Chunk] = split_message(body, chunk_size)
        self.size = len(memoryview(body))
        self.chunks_sent = 0
        self.next_start = 1  # first byte not yet handed to the connection
        self.all_sent = False
        self.in_flight: set[str] = set()  # tids awaiting a response (or the partial timeout)
        self.report_deadline: float | None = None
        self._covered: Sequence[tuple[int, int]] = ()  # success REPORT coverage, merged

    @property
    def empty(self) -> bool:
        """A body-less SEND (§5.4 connection binding, keepalive)."""
        return self.content_type is None and self.size == 0

    def next_chunk(self) -> Chunk:
        chunk = next(self._chunks)
        self.chunks_sent += 1
        self.next_start = chunk.end + 1
        self.all_sent = chunk.last
        return chunk

    def stop(self) -> bool:
        """Stop sending; True when some chunks are out, so the peer needs a '#'."""
        unsent = not self.all_sent
        self.all_sent = True
        return unsent and self.chunks_sent > 0

    def cover(self, start: int, end: int) -> bool:
        """Record a success REPORT range; True once every byte is covered."""
        if end >= start:
            merged: list[tuple[int, int]] = []
            for a, b in sorted([*self._covered, (start, end)]):
                if merged and a <= merged[-1][1] + 1:
                    merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
                else:
                    merged.append((a, b))
            self._covered = merged
        first = self._covered[0] if self._covered else (1, 0)
        return self.size == 0 or (first[0] <= 1 and first[1] >= self.size)
