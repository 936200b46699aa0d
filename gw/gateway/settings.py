"""The gateway's settings (from gw.config's [gateway] section) and the names of their modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["ALLOW", "Backlog", "GatewaySettings", "ReplyMode", "SetupMode"]

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE"

ReplyMode = Literal["confirm", "accept"]  # 2xx after delivery, or 202 at once
SetupMode = Literal["actpass", "active", "passive", "none"]  # our offer's a=setup

TOUCH_INTERVAL = 1.0  # seconds between two deadline refreshes of one session, per side


@dataclass
class GatewaySettings:
    node_id: str
    content_types: list[str]
    deployment: str = ""  # loop detection identity (gw.gateway.loops); "": node_id
    accept_wrapped_types: list[str] = field(default_factory=list)
    reply_mode: ReplyMode = "confirm"
    delivery_timeout: float = 10.0
    setup_timeout: float = 8.0
    require_success_report: bool = False
    max_queued_messages: int = 64
    max_pending_setups: int = 64
    max_pending_messages: int = 1000
    max_queued_bytes: int = 1 << 20
    max_page_message_size: int = 65536
    retry_after: int = 5
    msrp_setup: SetupMode = "active"
    failure_notice: str = ""
    chunk_size: int = 2048
    msrp_transaction_timeout: float = 30.0
    forward_timeout: float = 12.0  # waiting for a peer node's answer (at least delivery+1)
    bye_timeout: float = 32.0  # a BYE's answer (64*T1)
    # Answered sessions whose MSRP leg is not bound yet, per INVITE source address, and how
    # long one may stay so (gw.gateway.answering.Unbound)
    max_unbound_per_source: int = 64
    bind_timeout: float = 32.0
    # Hosts our INVITEs and MESSAGEs may go to (gw.gateway.destinations); empty: any
    allowed_destinations: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Backlog:
    """Work this node holds in flight: what an idle node must have none of (tests, ops)."""

    messages_to_msrp: int  # page-mode messages sent on MSRP, outcome not known yet
    key_locks: int  # keys whose slow path (set-up, takeover, forwarding) is running
    creating: int  # session records being created
    tasks: int  # gateway tasks not finished
