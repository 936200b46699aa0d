"""Messages the transaction layer and its user derive from a request.

Responses (RFC 3261 §8.2.6), the ACK for a non-2xx final response (§17.1.1.3)
and CANCEL (§9.1). The builders never raise on a malformed peer request: what
cannot be copied is left out, so an error response can still be attempted.
"""

from __future__ import annotations

from collections.abc import Iterable

from gw.ids import random_hex
from gw.sip.message import Request, Response, reason_phrase
from gw.sip.uri import SipSyntaxError, parse_name_addr

__all__ = ["MAGIC_COOKIE", "build_ack", "build_cancel", "build_response", "new_branch"]

MAGIC_COOKIE = "z9hG4bK"


def new_branch() -> str:
    """A fresh RFC 3261 branch: magic cookie plus 96 random bits (§8.1.1.7)."""
    return MAGIC_COOKIE + random_hex(24)


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """Copy Via(s), From, To, Call-ID, CSeq in order; tag To unless 100 or already tagged."""
    out: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name == "To" and to_tag is not None and status != 100 and not _has_tag(value):
            value = f"{value};tag={to_tag}"
        if name in ("Via", "From", "To", "Call-ID", "CSeq") or (
            name == "Timestamp" and status == 100  # §8.2.6.1
        ):
            out.append((name, value))
    response = Response(headers=out, status=status, reason=reason or reason_phrase(status))
    for name, value in headers:
        response.add(name, value)
    return response


def _has_tag(to_value: str) -> bool:
    if "tag" not in to_value.lower():
        return False
    try:
        return parse_name_addr(to_value).tag is not None
    except SipSyntaxError:
        return ";tag=" in to_value.lower()


def build_ack(invite: Request, response: Response) -> Request:
    """ACK for a non-2xx final response: hop-by-hop, same branch as the INVITE."""
    ack = _sibling(invite, "ACK")
    to = response.get("To")
    if to is not None:
        ack.set("To", to)
    return ack


def build_cancel(invite: Request) -> Request:
    """CANCEL matching a pending INVITE (same branch, so the server can find it)."""
    return _sibling(invite, "CANCEL")


def _sibling(invite: Request, method: str) -> Request:
    """Request-URI, top Via, Route set, From, To, Call-ID and CSeq number of `invite`."""
    headers: list[tuple[str, str]] = []
    vias = invite.get_all("Via")
    if vias:
        headers.append(("Via", vias[0]))
    headers.append(("Max-Forwards", invite.get("Max-Forwards") or "70"))
    headers.extend((k, v) for k, v in invite.headers if k == "Route")
    for name in ("From", "To", "Call-ID"):
        value = invite.get(name)
        if value is not None:
            headers.append((name, value))
    cseq = (invite.get("CSeq") or "").split()
    headers.append(("CSeq", f"{cseq[0] if cseq else '1'} {method}"))
    return Request(headers=headers, method=method, uri=invite.uri)
