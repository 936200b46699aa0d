"""The life of a gateway session on the node that owns it, as one state machine.

States (the store's record keeps the coarse `setup` / `active` / `ending`):

    INVITING ──2xx──▶ CONNECTING ──MSRP leg up──▶ ACTIVE
        │                 │                          │
        └─────────────────┴──── end (any reason) ────┴──▶ ENDING ──forgotten──▶ ENDED

A session set up by `msg_to_msrp` starts INVITING (our INVITE is out; a CANCEL ends it).
One set up by `msrp_gw_answer` starts ACTIVE: we answered, and the MSRP leg binds when
the peer's first request arrives. ENDING covers CANCEL/BYE and the record's deletion;
ENDED means no table holds it any more. Every change goes through `transition`, which
refuses any pair not in `TRANSITIONS` (as h11's `_state.py` does): an illegal change is
a bug of ours, never peer input.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "IllegalTransition", "SessionState", "check_transition"]


class SessionState(enum.Enum):
    INVITING = "inviting"  # msg_to_msrp: our INVITE has no final answer yet
    CONNECTING = "connecting"  # the dialog is up, the MSRP leg is being connected
    ACTIVE = "active"  # messages flow both ways
    ENDING = "ending"  # CANCEL/BYE sent or being sent, record being deleted
    ENDED = "ended"  # forgotten by this node

    @property
    def record_state(self) -> str:
        """The coarse state the store and the management API show."""
        if self is SessionState.INVITING or self is SessionState.CONNECTING:
            return "setup"
        return "active" if self is SessionState.ACTIVE else "ending"

    @property
    def setting_up(self) -> bool:
        return self is SessionState.INVITING or self is SessionState.CONNECTING

    @property
    def over(self) -> bool:
        """ENDING or ENDED: no new message is taken."""
        return self is SessionState.ENDING or self is SessionState.ENDED


_S = SessionState

TRANSITIONS: frozenset[tuple[SessionState, SessionState]] = frozenset(
    {
        (_S.INVITING, _S.CONNECTING),
        (_S.INVITING, _S.ENDING),
        (_S.CONNECTING, _S.ACTIVE),
        (_S.CONNECTING, _S.ENDING),
        (_S.ACTIVE, _S.ENDING),
        (_S.ENDING, _S.ENDED),
    }
)


class IllegalTransition(RuntimeError):
    """A change of state the table does not allow (a local bug, not peer input)."""


def check_transition(current: SessionState, new: SessionState) -> None:
    if (current, new) not in TRANSITIONS:
        raise IllegalTransition(f"session state {current.name} -> {new.name} is not allowed")
