"""The gateway's decisions (gw.gateway.rules) as unit tests: values in, answers out, no
socket, no store, no clock. The end-to-end suite checks the same answers on the wire."""

from __future__ import annotations

import pytest

from gw.gateway.loops import Hops
from gw.gateway.rules import (
    Limits,
    admit,
    msrp_outcome_answer,
    screen_page_message,
    screen_request,
    setup_refusal,
)
from gw.gateway.state import SessionState
from gw.msrp.events import MessageAborted, MessageDelivered, MessageFailed

TYPES = ["text/plain", "message/cpim"]
LIMITS = Limits(max_queued_messages=3, max_queued_bytes=100, retry_after=7)


# -- loops and hops -------------------------------------------------------------------------
def test_our_own_mark_is_a_loop() -> None:
    refusal = screen_request("MESSAGE", Hops(("other", "us")), "us", own_via=False)
    assert refusal is not None and (refusal.outcome.status, refusal.why) == (482, "loop")


def test_our_own_via_is_a_loop_even_without_marks() -> None:
    refusal = screen_request("MESSAGE", Hops(), "us", own_via=True)
    assert refusal is not None and refusal.outcome.reason == "Loop Detected"


def test_another_deployments_mark_is_ordinary_traffic() -> None:
    assert screen_request("INVITE", Hops(("other",)), "us", own_via=False) is None


def test_no_hop_left_is_483_except_for_options() -> None:
    refusal = screen_request("MESSAGE", Hops((), 0), "us", own_via=False)
    assert refusal is not None and refusal.outcome.status == 483
    assert screen_request("OPTIONS", Hops((), 0), "us", own_via=False) is None


# -- the bad-input list of a page-mode MESSAGE ------------------------------------------------
@pytest.mark.parametrize(
    ("content_type", "body", "status", "reason"),
    [
        (None, b"hi", 400, "Missing Content-Type"),
        ("", b"hi", 400, "Missing Content-Type"),
        ("text/plain", b"", 400, "Empty Message Body"),
        ("text/html", b"<p>", 415, "Unsupported Media Type"),
        ("garbage", b"x", 415, "Unsupported Media Type"),
    ],
)
def test_bad_page_messages(content_type: str | None, body: bytes, status: int, reason: str) -> None:
    refusal = screen_page_message(content_type, body, TYPES, draining=False, retry_after=5)
    assert refusal is not None
    assert (refusal.outcome.status, refusal.outcome.reason) == (status, reason)


def test_415_says_what_we_accept() -> None:
    refusal = screen_page_message("image/png", b"x", TYPES, draining=False, retry_after=5)
    assert refusal is not None
    assert refusal.outcome.headers == [("Accept", "text/plain, message/cpim")]


def test_draining_node_answers_503_with_retry_after() -> None:
    refusal = screen_page_message("text/plain", b"x", TYPES, draining=True, retry_after=9)
    assert refusal is not None and refusal.why == "draining"
    assert (refusal.outcome.status, refusal.outcome.headers) == (503, [("Retry-After", "9")])


def test_a_good_message_passes_with_parameters_and_case() -> None:
    ctype = "Text/Plain; charset=UTF-8"
    assert screen_page_message(ctype, b"x", TYPES, draining=False, retry_after=5) is None


# -- admission to a session and overload --------------------------------------------------------
def test_type_the_active_peer_refuses_is_415_with_its_types() -> None:
    outcome = admit(
        SessionState.ACTIVE, ("text/html",), "text/plain", 5, queued=0, queued_bytes=0,
        limits=LIMITS,
    )  # fmt: skip
    assert outcome is not None
    assert (outcome.status, outcome.headers) == (415, [("Accept", "text/html")])


def test_while_setting_up_the_peer_types_are_not_known_yet() -> None:
    assert admit(SessionState.INVITING, (), "text/plain", 5, queued=0, queued_bytes=0,
                 limits=LIMITS) is None  # fmt: skip


@pytest.mark.parametrize(("queued", "queued_bytes", "size"), [(3, 0, 1), (0, 90, 11)])
def test_full_queue_is_503_queue_full(queued: int, queued_bytes: int, size: int) -> None:
    outcome = admit(
        SessionState.ACTIVE, (), "text/plain", size, queued=queued, queued_bytes=queued_bytes,
        limits=LIMITS,
    )  # fmt: skip
    assert outcome is not None
    assert (outcome.status, outcome.reason, outcome.headers) == (
        503,
        "Queue Full",
        [("Retry-After", "7")],
    )


def test_queue_with_room_admits() -> None:
    assert admit(SessionState.ACTIVE, (), "text/plain", 10, queued=2, queued_bytes=90,
                 limits=LIMITS) is None  # fmt: skip


def test_too_many_setups_is_a_fast_503() -> None:
    assert setup_refusal(255, 256, 5) is None
    outcome = setup_refusal(256, 256, 5)
    assert outcome is not None
    assert (outcome.status, outcome.reason) == (503, "Too Many Session Setups")


# -- the MESSAGE's answer for its MSRP outcome ----------------------------------------------------
def test_delivered_is_200() -> None:
    assert msrp_outcome_answer(MessageDelivered("m", True), ()).status == 200


def test_aborted_is_480() -> None:
    assert msrp_outcome_answer(MessageAborted("m"), ()).status == 480


@pytest.mark.parametrize(
    ("msrp", "sip"), [(415, 415), (413, 413), (408, 408), (481, 480), (403, 403), (499, 403)]
)
def test_failed_maps_the_msrp_code(msrp: int, sip: int) -> None:
    assert msrp_outcome_answer(MessageFailed("m", msrp, "x"), ()).status == sip


def test_a_415_from_the_peer_says_what_it_accepts() -> None:
    outcome = msrp_outcome_answer(MessageFailed("m", 415, "x"), ("text/html",))
    assert outcome.headers == [("Accept", "text/html")]
