"""What the gateway core asks its adapter to do: the only way it acts on the world.

The core (gw.gateway.core and the objects it is composed of) never awaits and touches
no socket, store or clock of its own. It acts in two ways, as h2 and aioquic do:

- **Effects** it appends to its `Outbox`: answer a SIP request, send an MSRP message,
  arm a timer... The adapter carries them out in order after each call into the core,
  with no result to feed back (an outcome comes back later as an event).
- **Steps** a procedure yields: a procedure (`Procedure`) is a generator for work that
  needs answers from outside (a store read, an INVITE's final response, a peer node's
  reply). It yields a step, the adapter carries it out and sends the result back (or
  throws the step's exception into the generator). Tests drive procedures with fakes.

Every effect and step is a dataclass here: a reader sees all the gateway can do.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gw.cluster.messages import RpcRequest
from gw.msrp.endpoint import Session as MsrpHandle
from gw.sip.dialog import Dialog
from gw.sip.message import Request
from gw.store.records import SessionRecord

if TYPE_CHECKING:
    from gw.gateway.session import GwSession, Pending

T = TypeVar("T")


class ServerTxn(Protocol):
    """A SIP request to answer, as the core sees it (the endpoint's IncomingRequest)."""

    @property
    def request(self) -> Request: ...

    @property
    def dialog(self) -> Dialog | None:
        """The dialog a 2xx to this INVITE created, once answered."""


# --- effects: carried out at once, in order; nothing is fed back -------------------------


@dataclass(slots=True)
class Respond:
    """Answer a SIP request (once: a request already answered is left alone)."""

    to: ServerTxn
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    content_type: str | None = None


@dataclass(slots=True)
class SendMsrp:
    """Send a page-mode message on the session's MSRP leg, under the Message-ID the core
    chose; its outcome comes back as an MSRP event with that id (a refusal before
    sending, to `PageToMsrp.send_refused`)."""

    session: GwSession
    handle: MsrpHandle
    message_id: str
    body: bytes
    content_type: str
    success_report: bool | None


@dataclass(slots=True)
class ReportMsrp:
    """A REPORT for a message the MSRP peer sent: 200, or a failure code."""

    handle: MsrpHandle
    message_id: str
    code: int
    reason: str | None = None


@dataclass(slots=True)
class CloseMsrp:
    handle: MsrpHandle
    reason: str


@dataclass(slots=True)
class SendPage:
    """Send a MESSAGE for an MSRP message; the final response is fed back to
    `MsrpToPage.answered(ticket, response)` (no ticket: nothing waits for it). MESSAGEs
    leave in the order of their effects, even when one has to wait for a connection or a
    name (the session's later ones wait for it)."""

    ticket: PageTicket | None
    request: Request


@dataclass(slots=True)
class StartTimer:
    """Arm the delivery timer of `pending` (fed back to `GatewayCore.delivery_timeout`)."""

    pending: Pending
    session: GwSession
    delay: float


@dataclass(slots=True)
class StopTimer:
    pending: Pending


@dataclass(slots=True)
class Spawn:
    """Run a procedure on its own; the core does not wait for it."""

    procedure: Procedure[Any]


@dataclass(slots=True)
class Publish:
    """Publish an event on the bus (failures are logged, never raised)."""

    name: str
    data: dict[str, Any]


@dataclass(slots=True)
class PauseInput:
    """Flow control: stop (or resume) reading MSRP input on every connection."""

    paused: bool


@dataclass(slots=True)
class Wake:
    """`pending` has its outcome: resume the procedure waiting for it (`AwaitOutcome`)."""

    pending: Pending


Effect = (
    Respond
    | SendMsrp
    | ReportMsrp
    | CloseMsrp
    | SendPage
    | StartTimer
    | StopTimer
    | Wake
    | Spawn
    | Publish
    | PauseInput
)


@dataclass(slots=True)
class PageTicket:
    """One MESSAGE sent for an MSRP message: what its answer needs to be acted on."""

    session: GwSession
    message_id: str
    body_size: int
    content_type: str
    success_report: bool
    failure_report: str
    started: float


# --- steps: yielded by procedures; the result (or exception) is fed back -----------------


@dataclass(frozen=True, slots=True)
class StoreGet:
    key: str  # -> SessionRecord | None


@dataclass(frozen=True, slots=True)
class StoreCreate:
    record: SessionRecord  # -> bool: False when the key exists


@dataclass(frozen=True, slots=True)
class StoreCreateOrGet:
    record: SessionRecord  # -> None when stored, else the session that holds the key


@dataclass(frozen=True, slots=True)
class StoreUpdate:
    key: str
    fields: dict[str, Any]  # -> bool
    # An event (name, data) published in the same round trip, only if the session was
    # updated: a set-up's last write and its SESSION_STARTED cost one store command.
    event: tuple[str, dict[str, Any]] | None = None
    sid: str = ""  # only while this session instance holds the key ("": any)


@dataclass(frozen=True, slots=True)
class StoreDelete:
    key: str
    owner: str | None = None  # -> bool: deleted only while `owner` owns it
    sid: str = ""  # and while this session instance holds the key ("": any)


@dataclass(frozen=True, slots=True)
class StoreClaim:
    key: str
    expected_owner: str
    new_owner: str  # -> SessionRecord | None


@dataclass(frozen=True, slots=True)
class StoreSids:
    keys: list[str]  # -> list[str | None]: each record's sid, None where there is none


@dataclass(frozen=True, slots=True)
class StoreTouch:
    """Push the session's deadline for one side (-> None; SessionNotFound when the store
    lost the record)."""

    key: str
    page: bool
    now: float
    sid: str = ""  # SessionNotFound too when another instance holds the key


@dataclass(frozen=True, slots=True)
class StoreSweep:
    count: int  # -> list[str]: keys whose deadline passed


@dataclass(frozen=True, slots=True)
class Alive:
    node: str  # -> bool


@dataclass(frozen=True, slots=True)
class ForgetNode:
    node: str  # -> None: its inbox is gone


@dataclass(frozen=True, slots=True)
class Ask:
    """Ask a peer node (RPC). -> its reply; NodeUnreachable, TimeoutError, BadRpc."""

    node: str
    request: RpcRequest
    timeout: float


@dataclass(frozen=True, slots=True)
class Invite:
    """Send our INVITE, CANCEL it if no final answer comes within `timeout` (§9.1), and
    hang up a 2xx that crosses the CANCEL. -> (Response, Dialog | None)."""

    request: Request
    timeout: float


@dataclass(frozen=True, slots=True)
class Cancel:
    invite: Request  # -> None (errors are swallowed: a CANCEL is best effort)


@dataclass(frozen=True, slots=True)
class Bye:
    dialog: Dialog  # -> None (errors and timeouts are swallowed)


@dataclass(frozen=True, slots=True)
class Connect:
    """Open the MSRP leg (active) or wait for the peer to bind it (passive). -> None;
    MsrpSessionError, TimeoutError, OSError."""

    handle: MsrpHandle
    timeout: float


@dataclass(frozen=True, slots=True)
class DialogOf:
    """The dialog our 2xx to this INVITE created (-> Dialog | None)."""

    txn: ServerTxn


@dataclass(frozen=True, slots=True)
class AwaitOutcome:
    """Wait until `pending` has its outcome (-> Outcome)."""

    pending: Pending


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class PublishNow:
    """Publish and wait for it: what follows must not overtake the event."""

    name: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Exclusive:
    """Run `procedure` while no other `Exclusive` of the same key runs on this node
    (waiters go in arrival order). -> the procedure's result."""

    key: str
    procedure: Procedure[Any]


@dataclass(frozen=True, slots=True)
class Refresh:
    """Run `procedure` (a deadline refresh of one side of a session) unless the same
    refresh is in flight, in which case wait for that one. -> the procedure's result."""

    session: GwSession
    page: bool
    procedure: Procedure[bool]


Step = (
    StoreGet
    | StoreCreate
    | StoreCreateOrGet
    | StoreUpdate
    | StoreDelete
    | StoreClaim
    | StoreSids
    | StoreTouch
    | StoreSweep
    | Alive
    | ForgetNode
    | Ask
    | Invite
    | Cancel
    | Bye
    | Connect
    | DialogOf
    | AwaitOutcome
    | Sleep
    | PublishNow
    | Exclusive
    | Refresh
)

Procedure = Generator[Step, Any, T]


class Outbox:
    """The effects the core produced since the adapter last took them; the core appends
    through `emit` (a bound `list.append`: no Python frame per effect)."""

    __slots__ = ("effects", "emit")

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.emit: Callable[[Effect], None] = self.effects.append

    def take(self) -> list[Effect]:
        effects = self.effects
        if not effects:
            return effects
        taken = effects.copy()
        effects.clear()
        return taken
