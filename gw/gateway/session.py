"""In-process state of a gateway session this node owns (the Redis hash is the shared view)."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from gw.msrp.endpoint import Session as MsrpHandle
from gw.sip.dialog import Dialog
from gw.sip.message import Request
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

    def enqueue(self, pending: Pending) -> None:
        self.queue.append(pending)
        self.queued_bytes += pending.size

    def pop(self) -> Pending:
        pending = self.queue.popleft()
        self.queued_bytes -= pending.size
        return pending
