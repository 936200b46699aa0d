"""In-process state of a gateway session this node owns (the Redis hash is the shared view)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gw.cluster.messages import PageMessage
from gw.gateway.commands import ServerTxn
from gw.gateway.state import SessionState, check_transition
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import (
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    SessionEvent,
)
from gw.sip.dialog import Dialog
from gw.sip.message import Request
from gw.sip.uri import parse_name_addr
from gw.store.records import Origin, SessionRecord


@dataclass(slots=True)
class Outcome:
    """The answer a page-mode MESSAGE gets: its SIP status, reason and extra headers."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


def busy(reason: str, retry_after: int) -> Outcome:
    """A 503 with Retry-After (RFC 3261 §21.5.4): the one way a busy answer is built."""
    return Outcome(503, reason, [retry_after_header(retry_after)])


def retry_after_header(seconds: int) -> tuple[str, str]:
    return ("Retry-After", str(seconds))


@dataclass(slots=True, eq=False)
class Pending:
    """A page-mode message waiting for (or in) delivery on the MSRP side.

    It gets its outcome exactly once (`GatewayCore.settle`). Its answer goes to `reply`,
    the MESSAGE's server transaction, when the message came on the fast path; a
    procedure that carries a forwarded or routed message waits for it (`AwaitOutcome`).
    `timer` and `waiter` belong to the adapter (the delivery timer, the waiting future)."""

    body: bytes
    content_type: str
    call_id: str
    started: float  # perf counter, for the latency histogram
    reply: ServerTxn | None = None
    accepted: bool = False  # reply_mode accept: 202 was given, the outcome is only counted
    message_id: str = ""  # its MSRP Message-ID once sent
    outcome: Outcome | None = None
    timed: bool = False  # its delivery timer is armed
    timer: object | None = None
    waiter: object | None = None

    @property
    def size(self) -> int:
        return len(self.body)


def mirror_into(page: PageMessage, record: SessionRecord) -> None:
    """MESSAGEs back to the page-mode user are mirrored (reference behaviour): from the
    MESSAGE's To, to and R-URI its From; and they carry its path (marks, hops)."""
    frm = parse_name_addr(page.page_from).uri
    to = parse_name_addr(page.page_to).uri
    record.msg_from, record.msg_to, record.msg_ruri = str(to), str(frm), str(frm)
    record.marks, record.max_forwards = list(page.marks), page.max_forwards


@dataclass(slots=True, eq=False)
class GwSession:
    """One session this node owns, kept small: a node holds many idle ones.

    Only what the session still needs is kept: the parsed INVITE (`invite`) only while
    it may have to be CANCELled (until the dialog is up), the message queue only while
    messages wait in it. The MSRP handle's on_event is `on_msrp_event`, a bound method
    (no closure per session)."""

    key: str
    origin: Origin
    record: SessionRecord
    state: SessionState = SessionState.INVITING
    dialog: Dialog | None = None
    invite: Request | None = None  # our INVITE, until its dialog is up (CANCEL needs it)
    call_id: str = ""  # of the INVITE that set the session up (ours or the peer's)
    msrp: MsrpHandle | None = None
    queue: deque[Pending] | None = None  # created on the first queued message, dropped empty
    # Outcomes of messages that were the MSRP leg's first SEND, known before the set-up
    # ended (its record is written meanwhile): answered when it ends (`ToMsrp.release`).
    early: list[tuple[Pending, MessageDelivered | MessageFailed | MessageAborted]] | None = None
    queued_bytes: int = 0
    peer_types: tuple[str, ...] = ()
    trace: bool = False
    touched_page: float = 0.0  # wall clock of the last deadline refresh, per side
    touched_msrp: float = 0.0
    # the deadline refresh in flight, per side (the adapter's; the core only tests for one)
    touching: object | None = None
    touching_msrp: object | None = None
    # MSRP messages waiting for that refresh, in arrival order; None when none waits
    to_page_waiting: deque[MessageReceived] | None = None
    sink: Callable[[GwSession, SessionEvent], None] | None = None  # the gateway's handler
    # An answered session whose MSRP leg no connection carries yet: the source address of
    # its INVITE (gw.gateway.answering.Unbound counts them); None once bound or ended.
    unbound_from: str | None = None

    def transition(self, new: SessionState) -> None:
        """Change state as `gw.gateway.state.TRANSITIONS` allows (IllegalTransition)."""
        check_transition(self.state, new)
        self.state = new

    @property
    def queued(self) -> int:
        return 0 if self.queue is None else len(self.queue)

    def enqueue(self, pending: Pending) -> None:
        if self.queue is None:
            self.queue = deque()
        self.queue.append(pending)
        self.queued_bytes += pending.size

    def pop(self) -> Pending | None:
        """The oldest queued message, or None (the emptied queue is dropped)."""
        queue = self.queue
        if not queue:
            self.queue = None
            return None
        pending = queue.popleft()
        self.queued_bytes -= pending.size
        if not queue:
            self.queue = None
        return pending

    def requeue(self, pending: Pending) -> None:
        """Put a message handed to the MSRP leg back at the head (its leg failed first)."""
        if self.queue is None:
            self.queue = deque()
        self.queue.appendleft(pending)
        self.queued_bytes += pending.size

    def unqueue(self, pending: Pending) -> bool:
        """Take `pending` out of the queue if it still waits there."""
        queue = self.queue
        if queue is None:
            return False
        try:
            queue.remove(pending)
        except ValueError:
            return False
        self.queued_bytes -= pending.size
        if not queue:
            self.queue = None
        return True

    def on_msrp_event(self, event: SessionEvent) -> None:
        """The MSRP handle's on_event: hands the event to the gateway with this session."""
        if self.sink is not None:
            self.sink(self, event)
