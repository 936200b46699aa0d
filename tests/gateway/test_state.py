"""The session state machine of gw.gateway.state: every allowed change, and no other."""

from __future__ import annotations

import itertools

import pytest

from gw.gateway.state import TRANSITIONS, IllegalTransition, SessionState, check_transition

S = SessionState


def test_msg_to_msrp_path_and_every_end_are_allowed() -> None:
    for a, b in [(S.INVITING, S.CONNECTING), (S.CONNECTING, S.ACTIVE), (S.ENDING, S.ENDED)]:
        check_transition(a, b)
    for a in (S.INVITING, S.CONNECTING, S.ACTIVE):
        check_transition(a, S.ENDING)


@pytest.mark.parametrize(
    ("current", "new"),
    [p for p in itertools.product(S, S) if p not in TRANSITIONS],
)
def test_every_other_change_is_refused(current: SessionState, new: SessionState) -> None:
    with pytest.raises(IllegalTransition):
        check_transition(current, new)


def test_nothing_leaves_ended_and_nothing_goes_back_to_setting_up() -> None:
    assert not [b for a, b in TRANSITIONS if a is S.ENDED]
    assert not [a for a, b in TRANSITIONS if b is S.INVITING]


def test_the_store_sees_three_coarse_states() -> None:
    assert {s.record_state for s in S} == {"setup", "active", "ending"}
    assert S.INVITING.record_state == S.CONNECTING.record_state == "setup"
    assert S.ENDING.over and S.ENDED.over and not S.ACTIVE.over
