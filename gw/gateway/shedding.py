"""Load shedding at set-up capacity: refusals answered from the raw datagram.

At `max_pending_setups` the core already refuses a MESSAGE for a key with no local session
(503 Too Many Session Setups, before any task or store access). Measured beyond capacity,
that refusal still cost about as much as a set-up step (parse, server transaction, decision,
response: ~200 µs of node CPU here), so at twice the capacity refusing ate the CPU that the
set-ups in progress needed, and set-ups served per second fell with the load offered.

`Shedder.screen` runs on the UDP listener before the parser, only while at capacity. It
answers, statelessly (gw.sip.stateless), exactly what the core would have answered:
- an out-of-dialog MESSAGE whose key has no local session: 503 + Retry-After, counted as a
  set-up refused (`msrpgw_setups_refused_total`), logged once a second;
- a BYE for a Call-ID no local session has: 481 (what the core answers; senders of a
  refused MESSAGE, SIPp among them, may send one), counted by code in
  `msrpgw_requests_rejected_total`; no log line per BYE (the refusals' line says why).
Everything else, and everything when a policy hook decides keys, takes the normal path.
"""

from __future__ import annotations

from collections.abc import Callable

from gw.gateway.core import GatewayCore
from gw.gateway.policy import Policy
from gw.sip.stateless import answer, peek
from gw.sip.uri import SipSyntaxError, parse_name_addr

__all__ = ["Shedder"]

Send = Callable[[bytes, tuple[str, int]], None]


class Shedder:
    def __init__(self, core: GatewayCore, policy: Policy, send: Send, server: str) -> None:
        self.core = core
        self.policy = policy
        self.send = send
        self.server = server

    def screen(self, data: bytes, addr: tuple[str, int]) -> bool:
        """True when the request was answered here (the caller drops it)."""
        core = self.core
        if self.policy.hook is not None or not core.setups.at_capacity():
            return False
        request = peek(data)
        if request is None:
            return False
        if request.method == "MESSAGE" and not request.to_tagged:
            try:
                page = parse_name_addr(request.from_value).uri
                msrp = parse_name_addr(request.to_value).uri
            except SipSyntaxError:
                return False  # the full path answers it precisely
            refused = core.refuse_new(self.policy.key(page, msrp))  # as PageToMsrp asks
            if refused is None:
                return False
            core.ctx.stats.page_answers[refused.status] += 1  # as PageToMsrp.answer counts
            headers = [*refused.headers, ("Server", self.server)]
            data = answer(request, refused.status, refused.reason, headers=headers)
        elif request.method == "BYE" and request.to_tagged:
            if core.ctx.table.by_call_id(request.call_id) is not None:
                return False
            core.ctx.stats.rejected[481] += 1  # msrpgw_requests_rejected_total{code="481"}
            data = answer(request, 481, "Call/Transaction Does Not Exist", headers=[])
        else:
            return False
        self.send(data, (addr[0], request.reply_port(addr[1])))
        return True
