"""In-process state of a gateway session this node owns (the Redis hash is the shared view)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gw.msrp.endpoint import Session as MsrpHandle
from gw.sip.dialog import Dialog
from gw.sip.message import Request
from gw.sip.uri import parse_name_addr
from gw.store.records import SessionRecord

SETUP = "setup"
ACTIVE = "active"
ENDING = "ending"


@dataclass
class Outcome:
    """The answer a page-mode MESSAGE gets: its SIP status, reason and extra headers."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Pending:
    """A page-mode message waiting for (or in) delivery on the MSRP side."""

    body: bytes
    content_type: str
    done: asyncio.Future[Outcome]
    call_id: str = ""

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class PageMessage:
    """A page-mode MESSAGE as the gateway needs it, also as sent between nodes."""

    key: str
    body: bytes
    content_type: str
    call_id: str
    page_from: str  # the MESSAGE's From (name-addr, no tag): the INVITE's From
    page_to: str  # the MESSAGE's To: the INVITE's To
    ruri: str  # where the INVITE goes (the MESSAGE's R-URI after routing)
    content_types: list[str] = field(default_factory=list)
    hops: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _WIRE}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> PageMessage:
        return cls(**{f: data[f] for f in _WIRE if f in data})

    def mirror_into(self, record: SessionRecord) -> None:
        """MESSAGEs back to the page-mode user are mirrored (reference behaviour)."""
        frm = parse_name_addr(self.page_from).uri
        to = parse_name_addr(self.page_to).uri
        record.msg_from, record.msg_to, record.msg_ruri = str(to), str(frm), str(frm)


_WIRE = (
    "key",
    "body",
    "content_type",
    "call_id",
    "page_from",
    "page_to",
    "ruri",
    "content_types",
    "hops",
)


@dataclass
class GwSession:
    key: str
    origin: str
    record: SessionRecord
    state: str = SETUP
    dialog: Dialog | None = None
    invite: Request | None = None
    msrp: MsrpHandle | None = None
    queue: deque[Pending] = field(default_factory=deque)
    queued_bytes: int = 0
    peer_types: list[str] = field(default_factory=list)
    setup_task: asyncio.Task[None] | None = None
    trace: bool = False
    touched_page: float = 0.0  # wall clock of the last deadline refresh, per side
    touched_msrp: float = 0.0

    def enqueue(self, pending: Pending) -> None:
        self.queue.append(pending)
        self.queued_bytes += pending.size

    def pop(self) -> Pending:
        pending = self.queue.popleft()
        self.queued_bytes -= pending.size
        return pending
