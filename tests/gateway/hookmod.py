"""A routing hook for tests/gateway/test_policy.py (loaded as tests.gateway.hookmod:decide)."""

from __future__ import annotations

from gw.gateway.policy import MSG_TO_MSRP, REJECT, Decision
from gw.sip.message import Request

calls: list[str] = []


def decide(request: Request) -> Decision | None:
    """Overrides two users; everything else falls back to the default (None)."""
    calls.append(request.method)
    user = request.uri.user or ""
    if user == "blocked":
        return Decision(REJECT, code=403, reason="Blocked By Hook")
    if user == "support" and request.method == "MESSAGE":
        return Decision(
            MSG_TO_MSRP,
            key="support-queue",
            content_types=["text/plain"],
            ruri="sip:agent1@support.example.com",
        )
    return None


not_callable = 42
