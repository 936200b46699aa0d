"""The gateway's decisions, as functions of values: no socket, no store, no clock.

Each takes what a rule needs and returns a `Refusal` (the SIP answer and why) or the
answer to give, or None when the request may go on. The engine calls them and carries
the result out (answer, log line, counter); tests call them directly
(tests/gateway/test_rules.py). This is the first piece of the sans-I/O gateway core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gw.gateway.loops import Hops
from gw.gateway.mapping import msrp_to_sip
from gw.gateway.session import Outcome, busy
from gw.gateway.state import SessionState
from gw.mime import mime_matches
from gw.msrp.events import MessageAborted, MessageDelivered, MessageFailed

__all__ = [
    "Limits",
    "Refusal",
    "admit",
    "failed_answer",
    "msrp_outcome_answer",
    "screen_page_message",
    "screen_request",
    "setup_refusal",
]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before any translation: its answer, and `why` for the log line."""

    outcome: Outcome
    why: str


def _refuse(status: int, reason: str, why: str, headers: Sequence[tuple[str, str]] = ()) -> Refusal:
    return Refusal(Outcome(status, reason, list(headers)), why)


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits `admit` applies to one session's queue (GatewaySettings' values)."""

    max_queued_messages: int
    max_queued_bytes: int
    retry_after: int


def screen_request(method: str, hops: Hops, deployment: str, *, own_via: bool) -> Refusal | None:
    """An out-of-dialog request: our own coming back is a loop (482, gw.gateway.loops);
    one with no hop left cannot be translated (483, RFC 3261 §16.3)."""
    if hops.passed(deployment) or own_via:
        return _refuse(482, "Loop Detected", "loop")
    if hops.max_forwards == 0 and method != "OPTIONS":
        return _refuse(483, "Too Many Hops", "max-forwards")
    return None


def screen_page_message(
    content_type: str | None,
    body: bytes,
    types: Sequence[str],
    *,
    draining: bool,
    retry_after: int,
) -> Refusal | None:
    """A page-mode MESSAGE before `msg_to_msrp`: it needs a type (the SEND needs one), a
    body (an empty SEND means bind/keepalive in MSRP), a type we translate (415 with
    Accept), and a node that is not draining (503)."""
    if not content_type:
        return _refuse(400, "Missing Content-Type", "bad message")
    if not body:
        return _refuse(400, "Empty Message Body", "bad message")
    if not mime_matches(content_type, types):
        return _refuse(
            415, "Unsupported Media Type", "content type", [("Accept", ", ".join(types))]
        )
    if draining:
        return Refusal(busy("Service Unavailable", retry_after), "draining")
    return None


def admit(
    state: SessionState,
    peer_types: Sequence[str],
    content_type: str,
    size: int,
    *,
    queued: int,
    queued_bytes: int,
    limits: Limits,
) -> Outcome | None:
    """A page-mode message for a session: refused when the session is up and its peer's
    a=accept-types exclude the type (415 with the peer's types, nothing sent), or when
    the session's queue is full (503 + Retry-After); else None (queue it)."""
    if state is SessionState.ACTIVE and peer_types and not mime_matches(content_type, peer_types):
        return Outcome(415, "Unsupported Media Type", [("Accept", ", ".join(peer_types))])
    if queued >= limits.max_queued_messages or queued_bytes + size > limits.max_queued_bytes:
        return busy("Queue Full", limits.retry_after)
    return None


def setup_refusal(in_progress: int, max_pending: int, retry_after: int) -> Outcome | None:
    """Overload: with `max_pending` set-ups in progress a new one gets a fast 503 instead
    of joining a queue where all of them would time out together."""
    if in_progress < max_pending:
        return None
    return busy("Too Many Session Setups", retry_after)


def msrp_outcome_answer(
    result: MessageDelivered | MessageFailed | MessageAborted, peer_types: Sequence[str]
) -> Outcome:
    """The page-mode MESSAGE's answer for its MSRP outcome (docs/protocol-mapping.md):
    delivered 200; refused, the mapped code (a 415 says what the peer accepts); aborted 480."""
    if isinstance(result, MessageDelivered):
        return Outcome(200, "OK")
    if isinstance(result, MessageFailed):
        return failed_answer(result.code, peer_types)
    return Outcome(480, "MSRP Message Aborted")


def failed_answer(code: int, peer_types: Sequence[str]) -> Outcome:
    """The MESSAGE's answer when its SEND failed with MSRP `code`; a 415 says what the
    peer accepts."""
    outcome = Outcome(*msrp_to_sip(code))
    if outcome.status == 415 and peer_types:
        outcome.headers.append(("Accept", ", ".join(peer_types)))
    return outcome
