"""The gateway's counters, typed: one attribute per counter, labelled ones keyed by value.

`gw.node_metrics` exports them and `gw.node.GcTuner` reads the session counts; neither
parses counter names back (they were f-string keys like `sessions_ended_<reason>`).
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Direction", "GatewayStats", "end_label"]


class Direction(enum.StrEnum):
    """Which way a message crossed the gateway (the label of the translation series)."""

    PAGE_TO_MSRP = "page_to_msrp"
    MSRP_TO_PAGE = "msrp_to_page"


def end_label(reason: str) -> str:
    """The metric label of an end reason: its part before any ':' detail, words joined by
    '_' (`msrp closed: connection lost` -> `msrp_closed`), so labels stay few."""
    return reason.split(":", 1)[0].strip().replace(" ", "_") or "unknown"


@dataclass(slots=True)
class GatewayStats:
    """Counters of one node's gateway. Plain ones are ints; labelled ones are Counters keyed
    by their label value (an origin, a reason, a status code, a direction)."""

    page_messages_in: int = 0  # page-mode MESSAGEs accepted for translation
    msrp_messages_in: int = 0  # complete MSRP messages received for translation
    forwarded_to_owner: int = 0
    forward_timeouts: int = 0
    sessions_taken_over: int = 0
    sessions_rebuilt: int = 0
    setups_refused: int = 0  # 503 Too Many Session Setups
    queue_full: int = 0  # 503 Queue Full
    store_errors: int = 0
    destinations_refused: int = 0  # 403: not in gateway.allowed_destinations
    unbound_refused: int = 0  # 503: a source's answered-but-unbound sessions at the cap
    msrp_input_paused: int = 0
    msrp_reports_ignored: int = 0
    sessions_created: Counter[str] = field(default_factory=Counter)  # by origin
    sessions_ended: Counter[str] = field(default_factory=Counter)  # by end_label(reason)
    setup_failed: Counter[int] = field(default_factory=Counter)  # by the MESSAGEs' SIP code
    page_answers: Counter[int] = field(default_factory=Counter)  # by SIP code
    rejected: Counter[int] = field(default_factory=Counter)  # refused before translating
    msrp_rejected: Counter[int] = field(default_factory=Counter)  # MSRP requests, in sessions
    delivered: Counter[Direction] = field(default_factory=Counter)
    failed: dict[Direction, Counter[int]] = field(
        default_factory=lambda: {d: Counter() for d in Direction}
    )

    def session_ended(self, reason: str) -> None:
        self.sessions_ended[end_label(reason)] += 1

    @property
    def created_total(self) -> int:
        return sum(self.sessions_created.values())

    @property
    def ended_total(self) -> int:
        return sum(self.sessions_ended.values())
