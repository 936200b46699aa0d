"""Events the MSRP session and connection cores report to their callers.

Plain frozen dataclasses: the cores append them, adapters and tests read them.
Outgoing messages end with exactly one outcome (delivered, failed or aborted).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "IncomingAborted",
    "IncomingExpired",
    "MessageAborted",
    "MessageDelivered",
    "MessageFailed",
    "MessageReceived",
    "Outcome",
    "ReportIgnored",
    "RequestRejected",
    "SessionBound",
    "SessionClosed",
    "SessionEvent",
    "UnmatchedResponse",
]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete incoming message (all chunks reassembled)."""

    message_id: str
    content_type: str
    body: bytes
    success_report: bool
    failure_report: str  # "yes", "no" or "partial"


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    """Outgoing message done. `confirmed` is False when nothing could confirm it
    (Failure-Report no, or partial with no error before the timeout)."""

    message_id: str
    confirmed: bool = True


@dataclass(frozen=True, slots=True)
class MessageFailed:
    """Outgoing message failed: peer status code, 408 for timeouts and lost
    connections, local 413/415/403/481 for what was refused before sending."""

    message_id: str
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class MessageAborted:
    """Outgoing message aborted by us (`abort`); the peer got a '#' chunk."""

    message_id: str


@dataclass(frozen=True, slots=True)
class IncomingAborted:
    """The peer aborted a message it was sending us ('#' chunk)."""

    message_id: str


@dataclass(frozen=True, slots=True)
class IncomingExpired:
    """A partly received message stalled and was dropped."""

    message_id: str


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """We refused a request; `answered` is False for REPORTs and Failure-Report no."""

    code: int
    reason: str
    method: str | None
    message_id: str | None
    answered: bool


@dataclass(frozen=True, slots=True)
class ReportIgnored:
    """A REPORT for a message we do not know, or whose outcome is already final."""

    message_id: str | None
    status: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class UnmatchedResponse:
    """A transaction response for no pending transaction (late, or never sent)."""

    tid: str
    status: int | None


@dataclass(frozen=True, slots=True)
class SessionBound:
    """The session is carried by a connection now: the peer (or we) can send in it."""


@dataclass(frozen=True, slots=True)
class SessionClosed:
    """The session ended; pending outgoing messages have failed."""

    reason: str


Outcome = MessageDelivered | MessageFailed | MessageAborted
SessionEvent = (
    MessageReceived
    | MessageDelivered
    | MessageFailed
    | MessageAborted
    | IncomingAborted
    | IncomingExpired
    | RequestRejected
    | ReportIgnored
    | SessionBound
    | SessionClosed
)
