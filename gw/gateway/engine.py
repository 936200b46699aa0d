"""The translation engine: `msg_to_msrp` and `msrp_gw_answer`, as in OpenSIPS msrp_gateway.

A node owns the sessions whose INVITE dialog and MSRP connection it holds; their
shared view is the Redis hash (gw.store). Page-mode MESSAGEs are answered with
the truth about delivery (reply_mode "confirm") or 202 at once ("accept").
"""

from __future__ import annotations

from collections.abc import Awaitable

from gw.gateway.base import ALLOW, GatewaySettings
from gw.gateway.loops import LOOP_HEADER, hops_of
from gw.gateway.page import PageSide
from gw.gateway.policy import ANSWER, MSG_TO_MSRP, OPTIONS
from gw.gateway.rules import screen_request
from gw.sip.endpoint import IncomingRequest

__all__ = ["ALLOW", "LOOP_HEADER", "Gateway", "GatewaySettings"]


class Gateway(PageSide):
    """The engine: routes each request to its side (OpenSIPS: the script calling the functions)."""

    def handle(self, incoming: IncomingRequest) -> Awaitable[None] | None:
        """The SIP endpoint's request handler. Work that needs no await is done here and
        None returned; otherwise the coroutine to run is returned (the endpoint runs it as
        a task), so a MESSAGE on an established session costs no task."""
        request = incoming.request
        method = request.method
        if method == "ACK":
            return None
        if incoming.dialog is not None or request.to.tag is not None:
            return self._in_dialog(incoming)
        if method == "CANCEL":
            return None  # answered by the endpoint
        refusal = screen_request(
            method, hops_of(request), self.deployment, own_via=self._own_via(request)
        )
        if refusal is not None:
            self._refuse(incoming, refusal)
            return None
        decision = self.policy.decide(request)
        if decision.action == OPTIONS:
            incoming.respond(200, headers=[("Allow", ALLOW), ("Accept", "*/*")])
        elif decision.action == MSG_TO_MSRP and method == "MESSAGE":
            return self.msg_to_msrp(incoming, decision)
        elif decision.action == ANSWER and method == "INVITE":
            return self.msrp_gw_answer(incoming, decision)
        else:
            code = decision.code or 405
            headers = list(decision.headers)
            if code == 405:
                headers.append(("Allow", ALLOW))
            self._reject(incoming, code, decision.reason or "Not Allowed", "policy", headers)
        return None
