"""Shared helpers for the transaction tests (no tests here)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from gw.sip.message import Request, Response, parse_message
from gw.sip.transaction import Address, Event, Send, Timers, TransactionLayer, build_response
from gw.sip.uri import parse_uri

TIMERS = Timers(t1=0.01, t2=0.04, t4=0.05, td=0.32)
T1, T2, T4, TD = TIMERS.t1, TIMERS.t2, TIMERS.t4, TIMERS.td
TIMEOUT = 64 * T1

SERVER = Address("UDP", "192.0.2.10", 5060)  # where our client transactions send
PEER = Address("UDP", "198.51.100.7", 5062)  # a peer sending us requests
PEER_TCP = Address("TCP", "198.51.100.7", 40001)

E = TypeVar("E")


def layer(**kwargs: bool) -> TransactionLayer:
    return TransactionLayer(TIMERS, **kwargs)


def request(
    method: str = "MESSAGE",
    *,
    branch: str | None = "z9hG4bKabc",
    sent_by: str = "198.51.100.7:5062",
    transport: str = "UDP",
    via_params: str = "",
    cseq: int = 1,
    to_tag: str | None = None,
    call_id: str = "call-1@example.org",
    uri: str = "sip:bob@example.com",
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    via = f"SIP/2.0/{transport} {sent_by}" + (f";branch={branch}" if branch else "") + via_params
    headers = [
        ("Via", via),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@example.org>;tag=ft1"),
        ("To", "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {method}"),
        *extra,
    ]
    return Request(headers=headers, method=method, uri=parse_uri(uri))


def reply(req: Request, status: int, to_tag: str | None = "tt1") -> Response:
    """A response as the peer would build it (a fresh object, as off the wire)."""
    return wire_resp(build_response(req, status, to_tag=to_tag))


def wire_req(msg: Request) -> Request:
    out = parse_message(msg.to_bytes())
    assert isinstance(out, Request)
    return out


def wire_resp(msg: Response) -> Response:
    out = parse_message(msg.to_bytes())
    assert isinstance(out, Response)
    return out


def of(events: Iterable[object], cls: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, cls)]


def sent(events: Iterable[Event]) -> list[Request | Response]:
    return [e.message for e in of(events, Send)]


def run_until(tl: TransactionLayer, end: float) -> list[tuple[float, Event]]:
    """Fire every timer due up to `end`, each exactly at its deadline."""
    out: list[tuple[float, Event]] = []
    while (deadline := tl.next_deadline()) is not None and deadline <= end + 1e-9:
        out.extend((deadline, e) for e in tl.on_timer(deadline))
    return out


def on_wire(events: Iterable[Event]) -> list[object]:
    """Events with each Send's message as its bytes: a completed transaction answers a
    retransmission from the encoded response it kept, an equal message but not the object."""
    return [(e.message.to_bytes(), e.dest, e.key) if isinstance(e, Send) else e for e in events]


def send_times(timed: list[tuple[float, Event]]) -> list[float]:
    return [round(t, 6) for t, e in timed if isinstance(e, Send)]
