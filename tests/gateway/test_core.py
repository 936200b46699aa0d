"""Every gateway rule on the sans-I/O core, with a fake clock and no socket, store or loop
(tests/support/core_world.py). The end-to-end suites prove the same behaviour on the
wire; these say which rule gives it, and run in well under a second.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from gw.cluster.messages import Answer, Failed, PageMessage
from gw.cluster.rpc import NodeUnreachable
from gw.gateway import commands as c
from gw.gateway import events as ev
from gw.gateway.state import SessionState
from gw.gateway.stats import Direction
from gw.msrp.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    SessionBound,
    SessionClosed,
)
from gw.sip.message import Response
from gw.sip.sdp import build_msrp_offer
from gw.sip.transaction import build_response
from gw.store.records import SessionRecord
from tests.support.core_world import (
    World,
    answer_2xx,
    msrp_offer,
    refused,
    sip_request,
    timed_out,
)

KEY = "alice@page.example-bob@msrp.example"
ANSWER_KEY = "alice@page.example-bob@msrp.example"


def established(world: World) -> None:
    """A msg_to_msrp session up and its first message delivered."""
    world.invite_answer = answer_2xx
    txn = world.message(b"first")
    world.msrp_event(world.session(), MessageDelivered("m1"))
    assert txn.status == 200


def answered_session(world: World, **kwargs: Any) -> tuple[Any, Any]:
    """An msrp_gw_answer session: the MSRP user called the page-mode user."""
    invite = sip_request(
        "INVITE",
        frm="sip:bob@msrp.example",
        to="sip:alice@page.example",
        body=msrp_offer(**kwargs),
        content_type="application/sdp",
        call_id="inv-1",
    )
    txn = world.request(invite)
    return txn, world.session(ANSWER_KEY)


def headers(txn: Any) -> dict[str, str]:
    return dict(txn.answers[-1].headers)


# -- msg_to_msrp: set-up and both reply modes --------------------------------------------


def test_new_key_sets_a_session_up_and_answers_with_the_delivery() -> None:
    world = World()
    txn = world.message(b"hello")
    assert world.store[KEY].state == "setup" and world.store[KEY].owner == "n1"
    assert len(world.of(c.StoreCreateOrGet)) == 1 and not world.of(c.StoreGet), "one round trip"
    (invite,) = world.of(c.Invite)
    assert invite.timeout == world.settings.setup_timeout
    assert invite.request.method == "INVITE" and txn.status is None, "nothing known yet"
    world.answer_invite(0, answer_2xx(invite.request))
    session = world.session()
    assert session.state is SessionState.ACTIVE and world.store[KEY].state == "active"
    (send,) = world.of(c.SendMsrp)
    assert (send.body, send.message_id) == (b"hello", "m1")
    assert txn.status is None, "confirm mode: answered only once delivered"
    world.msrp_event(session, MessageDelivered("m1"))
    assert txn.status == 200
    assert world.core.ctx.stats.delivered[Direction.PAGE_TO_MSRP] == 1
    assert (ev.SESSION_STARTED, {"key": KEY, "origin": "msg_to_msrp"}) in world.published


def test_reply_mode_accept_answers_202_at_once_and_publishes_a_later_failure() -> None:
    world = World(reply_mode="accept")
    txn = world.message(b"hello")
    assert txn.status == 202, "accepted before the session is even up"
    world.answer_invite(0, answer_2xx(world.of(c.Invite)[0].request))
    world.msrp_event(world.session(), MessageFailed("m1", 404, "Not Found"))
    assert txn.status == 202 and len(txn.answers) == 1
    failed = [d for n, d in world.published if n == ev.DELIVERY_FAILED]
    mapped = {"code": 403, "reason": "Rejected By MSRP Peer (404)"}
    assert failed == [{"key": KEY, "direction": "page_to_msrp", **mapped}]


def test_message_on_an_established_session_takes_no_store_step() -> None:
    world = World()
    established(world)
    world.message(b"second")  # refreshes the deadline first (once a second at most)
    world.msrp_event(world.session(), MessageDelivered("m2"))
    assert len(world.of(c.StoreTouch)) == 1
    steps = len(world.steps)
    txn = world.message(b"third")
    assert world.steps[steps:] == [], "the fast path: no procedure, no store round trip"
    assert world.of(c.SendMsrp)[-1].body == b"third"
    world.msrp_event(world.session(), MessageDelivered("m3"))
    assert txn.status == 200


def test_deadline_refresh_is_due_once_a_second() -> None:
    world = World()
    established(world)
    world.message(b"refreshes")
    world.advance(1.0)  # TOUCH_INTERVAL
    world.message(b"after a second")
    touches = world.of(c.StoreTouch)
    assert len(touches) == 2 and touches[1].page and touches[1].now == world.clock.now
    assert world.store[KEY].last_message == world.clock.now
    world.message(b"right after")
    assert len(world.of(c.StoreTouch)) == 2


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (MessageFailed("m2", 415, "Unsupported"), 415),
        (MessageFailed("m2", 481, "No Session"), 480),
        (MessageFailed("m2", 408, "Timeout"), 408),
    ],
)
def test_msrp_failure_maps_to_the_message_answer(result: MessageFailed, status: int) -> None:
    world = World()
    established(world)
    txn = world.message(b"second")
    world.msrp_event(world.session(), result)
    assert txn.status == status
    if status == 415:
        assert headers(txn)["Accept"] == "text/plain", "a 415 says what the peer takes"


# -- the timers ---------------------------------------------------------------------------


def test_delivery_timeout_answers_408_and_ignores_a_late_outcome() -> None:
    world = World(delivery_timeout=3.0)
    established(world)
    txn = world.message(b"lost")
    world.advance(2.9)
    assert txn.status is None
    world.advance(0.2)
    assert txn.status == 408 and txn.answers[-1].reason == "Delivery Timeout"
    world.msrp_event(world.session(), MessageDelivered("m2"))
    assert len(txn.answers) == 1


def test_delivered_message_stops_its_timer() -> None:
    world = World()
    established(world)
    world.message(b"x")
    assert len(world.timers) == 1
    world.msrp_event(world.session(), MessageDelivered("m2"))
    assert world.timers == {}


def test_setup_timeout_fails_the_queue_and_publishes_setup_failed_after_the_delete() -> None:
    world = World()
    txn = world.message(b"hello")
    world.answer_invite(0, timed_out(world.of(c.Invite)[0].request))
    assert txn.status == 408
    assert KEY not in world.store and world.core.ctx.table.get(KEY) is None
    names = [n for n, _ in world.published]
    assert names.index(ev.SETUP_FAILED) < names.index(ev.SESSION_ENDED)
    failed = dict(world.published)[ev.SETUP_FAILED]
    # no reply from the MSRP side: code and reason are null (reference semantics)
    assert failed == {
        "key": KEY,
        "from_uri": "sip:bob@msrp.example",
        "to_uri": "sip:alice@page.example",
        "ruri": "sip:alice@page.example",
        "code": None,
        "reason": None,
    }
    delete = world.of(c.StoreDelete)[0]
    event = next(s for s in world.of(c.PublishNow) if s.name == ev.SETUP_FAILED)
    assert world.steps.index(delete) < world.steps.index(event), "record gone before the event"


def test_session_timeout_ends_only_a_session_whose_deadline_passed() -> None:
    world = World()
    established(world)
    world.procedure(world.core.expired(KEY))
    assert world.session().state is SessionState.ACTIVE, "deadline not passed"
    world.clock.now += 3601
    world.procedure(world.core.expired(KEY))
    assert world.core.ctx.table.get(KEY) is None and KEY not in world.store
    assert world.of(c.Bye), "the dialog is hung up"
    assert world.core.ctx.stats.sessions_ended["expired"] == 1


# -- set-up failures ----------------------------------------------------------------------


def test_refused_invite_gives_its_code_to_the_message_and_the_event() -> None:
    world = World()
    txn = world.message(b"hello")
    world.answer_invite(0, refused(world.of(c.Invite)[0].request, 486, "Busy Here"))
    assert (txn.status, txn.answers[-1].reason) == (486, "Busy Here")
    event = dict(world.published)[ev.SETUP_FAILED]
    assert (event["code"], event["reason"]) == (486, "Busy Here")
    assert world.core.ctx.stats.setup_failed[486] == 1


def test_answer_without_msrp_stream_gets_488_and_a_bye() -> None:
    world = World()
    txn = world.message(b"hello")
    invite = world.of(c.Invite)[0].request
    response, dialog = answer_2xx(invite, sdp=b"v=0\r\n")
    world.answer_invite(0, (response, dialog))
    assert (txn.status, txn.answers[-1].reason) == (488, "No MSRP Stream In Answer")
    assert world.of(c.Bye)
    assert dict(world.published)[ev.SETUP_FAILED]["code"] is None, "a 2xx is no refusal"


def test_relay_down_fails_the_setup_with_its_code() -> None:
    world = World()
    world.legs.relay_down = True
    txn = world.message(b"hello")
    assert (txn.status, txn.answers[-1].reason) == (503, "MSRP Relay Unavailable")
    assert "Retry-After" in headers(txn)
    assert not world.of(c.Invite)


def test_session_ended_while_inviting_is_cancelled() -> None:
    world = World()
    txn = world.message(b"hello")
    assert world.procedure(world.core.end_session(KEY, "mi"))
    assert world.of(c.Cancel) and txn.status == 480
    world.answer_invite(0, refused(world.of(c.Invite)[0].request, 487, "Terminated"))
    assert world.core.ctx.stats.sessions_ended["mi"] == 1, "counted once"


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "reason"),
    [
        ({"content_type": None}, 400, "Missing Content-Type"),
        ({"body": b""}, 400, "Empty Message Body"),
        ({"content_type": "text/html"}, 415, "Unsupported Media Type"),
        ({"extra": ["Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours"]}, 482, "Loop Detected"),
    ],
)
def test_bad_message_gets_a_precise_answer(
    kwargs: dict[str, Any], status: int, reason: str
) -> None:
    world = World()
    txn = world.request(sip_request("MESSAGE", **kwargs))
    assert (txn.status, txn.answers[-1].reason) == (status, reason)
    assert world.core.ctx.stats.rejected[status] == 1
    assert not world.store and not world.steps
    if status == 415:
        assert headers(txn)["Accept"] == "text/plain"


def test_no_hop_left_gets_483() -> None:
    world = World()
    request = sip_request("MESSAGE")
    request.headers = type(request.headers)(
        [(n, "0" if n == "Max-Forwards" else v) for n, v in request.headers]
    )
    txn = world.request(request)
    assert txn.status == 483


def test_draining_node_answers_503_with_retry_after() -> None:
    world = World(retry_after=7)
    world.core.ctx.draining = True
    txn = world.message()
    assert txn.status == 503 and headers(txn)["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"v=0\r\nthis is no sdp", 400), (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", 488)],
)
def test_invite_without_usable_msrp_offer_is_refused_before_any_record(
    body: bytes, status: int
) -> None:
    world = World()
    invite = sip_request("INVITE", body=body, content_type="application/sdp")
    txn = world.request(invite)
    assert txn.status == status and not world.store


def test_other_methods_get_405_with_allow() -> None:
    world = World()
    txn = world.request(sip_request("SUBSCRIBE"))
    assert txn.status == 405 and "MESSAGE" in headers(txn)["Allow"]


# -- overload -----------------------------------------------------------------------------


def test_setups_beyond_max_pending_setups_get_a_fast_503() -> None:
    world = World(max_pending_setups=1, retry_after=3)
    first = world.message(b"one")
    steps = len(world.steps)
    second = world.message(b"two", frm="sip:carol@page.example")
    assert world.steps[steps:] == [], "refused before any task or store round trip"
    assert first.status is None
    assert (second.status, second.answers[-1].reason) == (503, "Too Many Session Setups")
    assert headers(second)["Retry-After"] == "3"
    assert world.core.ctx.stats.setups_refused == 1
    world.answer_invite(0, answer_2xx(world.of(c.Invite)[0].request))
    third = world.message(b"three", frm="sip:carol@page.example")
    assert third.status is None, "set-up capacity is back"


def test_a_full_queue_answers_503_queue_full() -> None:
    world = World(max_queued_messages=1)
    world.message(b"one")
    second = world.message(b"two")
    assert (second.status, second.answers[-1].reason) == (503, "Queue Full")
    assert world.core.ctx.stats.queue_full == 1


def test_store_down_on_the_slow_path_answers_503() -> None:
    world = World()
    world.store_down = True
    txn = world.message()
    assert (txn.status, txn.answers[-1].reason) == (503, "Service Unavailable")
    assert world.core.ctx.stats.store_errors == 1


def test_msrp_input_pauses_with_max_pending_messages_unanswered() -> None:
    world = World(max_pending_messages=2)
    _, session = answered_session(world)
    for i in range(2):
        world.msrp_event(session, MessageReceived(f"r{i}", "text/plain", b"x", False, "yes"))
    pauses = world.of(c.PauseInput)
    assert [p.paused for p in pauses] == [True]
    tickets = [p.ticket for p in world.of(c.SendPage)]
    world.core.to_page.answered(tickets[0], _ok(world.of(c.SendPage)[0].request))
    world.run()
    assert [p.paused for p in world.of(c.PauseInput)] == [True, False]


# -- cluster: forwarding and takeover -----------------------------------------------------


def test_the_queued_message_is_the_first_send_of_a_leg_we_connect() -> None:
    """RFC 4975 §5.4 lets the active side's first SEND carry a body: the MESSAGE's text is
    handed to the leg before it connects, instead of an empty SEND and its round trip."""
    world = World()
    world.invite_answer = answer_2xx
    txn = world.message(b"first")
    (send,) = world.sent_at_connect
    assert send.body == b"first"
    assert txn.status is None, "answered by its MSRP outcome, not by the set-up"
    world.msrp_event(world.session(), MessageDelivered(send.message_id))
    assert txn.status == 200


def test_first_send_delivered_before_the_record_is_written_is_answered_after_it() -> None:
    """The MESSAGE's 200 waits for the set-up to end (the record active), so a client that
    got it finds the session recorded; delivered is delivered even if the store fails."""
    for store_error in (None, RedisConnectionError("store down")):
        world = World()
        world.invite_answer = answer_2xx
        world.park_after_connect = True
        txn = world.message(b"first")
        (send,) = world.sent_at_connect
        world.msrp_event(world.session(), MessageDelivered(send.message_id))
        assert txn.status is None, "the set-up has not ended"
        world.resume_after_connect(store_error)
        assert txn.status == 200, store_error
        published = [name for name, _ in world.published]
        if store_error is None:
            assert world.store[KEY].state == "active" and ev.SESSION_STARTED in published
        else:
            assert ev.SETUP_FAILED in published and ev.SESSION_ENDED in published


def test_a_leg_that_cannot_connect_answers_its_first_message_as_the_set_up_failure() -> None:
    world = World()
    world.invite_answer = answer_2xx
    world.connect_error = OSError("connection refused")
    txn = world.message(b"first")
    assert world.sent_at_connect, "it had been handed to the leg"
    assert txn.status == 480 and txn.answers[-1].reason == "MSRP Connection Failed"
    assert [name for name, _ in world.published] == [ev.SETUP_FAILED, ev.SESSION_ENDED]
    assert KEY not in world.store


def test_live_owner_gets_the_message_forwarded_and_its_answer_is_ours() -> None:
    world = World()
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.alive.add("n2")
    asked: list[c.Ask] = []

    def owner(step: c.Ask) -> Answer:
        asked.append(step)
        return Answer(200, "OK", [])

    world.ask = owner
    txn = world.message(b"hi")
    assert txn.status == 200
    (ask,) = asked
    assert ask.node == "n2" and isinstance(ask.request, PageMessage)
    assert ask.request.body == b"hi" and ask.request.key == KEY
    assert world.core.ctx.stats.forwarded_to_owner == 1


def test_owner_of_another_release_that_refuses_the_message_gets_503_not_500() -> None:
    """Rolling upgrade: an owner older than our RPC version answers Failed(retry): the
    MESSAGE gets 503 with Retry-After (the owner is soon upgraded or drained), no session."""
    world = World(retry_after=4)
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.alive.add("n2")
    world.ask = lambda step: Failed("rpc version 2 is newer than this node's 1", retry=True)
    txn = world.message(b"hi")
    assert txn.status == 503 and headers(txn)["Retry-After"] == "4"
    assert txn.answers[-1].reason == "Owner Runs Another Release"
    assert world.store[KEY].owner == "n2", "the owner keeps its session"
    world.ask = lambda step: Failed("handler raised")
    assert world.message(b"again").status == 500


def test_dead_owner_key_is_taken_over() -> None:
    world = World()
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.invite_answer = answer_2xx
    txn = world.message(b"hi")
    assert world.store[KEY].owner == "n1"
    moved = dict(world.published)[ev.SESSION_MOVED]
    assert moved == {"key": KEY, "from_node": "n2", "to_node": "n1", "reason": "owner dead"}
    world.msrp_event(world.session(), MessageDelivered("m1"))
    assert txn.status == 200 and world.core.ctx.stats.sessions_taken_over == 1


def test_owner_whose_inbox_is_gone_is_looked_up_again_then_taken_over() -> None:
    world = World()
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.alive.add("n2")

    def gone(step: c.Ask) -> Any:
        world.alive.discard("n2")  # its registry entry expires
        raise NodeUnreachable("n2")

    world.ask = gone
    world.message(b"hi")
    assert world.store[KEY].owner == "n1"


def test_message_forwarded_twice_is_refused_while_the_owner_changes() -> None:
    world = World()
    world.core.ctx.clustered = True
    world.store[KEY] = SessionRecord(key=KEY, state="active", owner="n2")
    world.alive.add("n2")
    page = PageMessage(
        key=KEY,
        body=b"x",
        content_type="text/plain",
        call_id="c",
        page_from="<sip:alice@page.example>",
        page_to="<sip:bob@msrp.example>",
        ruri="sip:bob@msrp.example",
        hops=2,
    )
    outcome = world.procedure(world.core.routing.route_page(page))
    assert (outcome.status, outcome.reason) == (503, "Session Owner Changing")


# -- msrp_gw_answer and SEND -> MESSAGE ------------------------------------------------------


def _ok(request: Any, status: int = 200) -> Response:
    return build_response(request, status, "OK" if status == 200 else "Not Found")


def test_answered_session_translates_sends_and_reports_the_outcome() -> None:
    world = World()
    txn, session = answered_session(world)
    assert txn.status == 200 and txn.answers[-1].content_type == "application/sdp"
    rec = world.store[ANSWER_KEY]
    assert (rec.origin, rec.local_tag) == ("answer", "gwtag")
    world.msrp_event(session, MessageReceived("r1", "text/plain", b"hi", True, "yes"))
    (send,) = world.of(c.SendPage)
    assert send.request.method == "MESSAGE" and send.request.body == b"hi"
    assert str(send.request.uri) == "sip:alice@page.example"
    world.core.to_page.answered(send.ticket, _ok(send.request))
    world.run()
    (report,) = world.of(c.ReportMsrp)
    assert (report.message_id, report.code) == ("r1", 200)


def test_page_mode_failure_becomes_a_failure_report_and_an_event() -> None:
    world = World()
    _, session = answered_session(world)
    world.msrp_event(session, MessageReceived("r1", "text/plain", b"hi", False, "yes"))
    send = world.of(c.SendPage)[0]
    world.core.to_page.answered(send.ticket, _ok(send.request, 404))
    world.run()
    (report,) = world.of(c.ReportMsrp)
    assert (report.message_id, report.code) == ("r1", 403), "sip_to_msrp(404)"
    assert any(n == ev.DELIVERY_FAILED for n, _ in world.published)


def test_sends_wait_for_a_due_refresh_and_keep_their_order() -> None:
    world = World()
    _, session = answered_session(world)
    world.advance(1.0)
    for i in range(3):
        session_event = MessageReceived(f"r{i}", "text/plain", f"{i}".encode(), False, "no")
        world.core.msrp_event(session, session_event)  # all before the refresh runs
    world.run()
    assert len(world.of(c.StoreTouch)) == 1
    assert [p.request.body for p in world.of(c.SendPage)] == [b"0", b"1", b"2"]


def test_bye_ends_the_session_and_deletes_its_record() -> None:
    world = World()
    _, session = answered_session(world)
    bye = sip_request("BYE", frm="sip:bob@msrp.example", to_tag="gwtag", call_id="inv-1")
    txn = world.request(bye)
    assert txn.status == 200
    assert session.state is SessionState.ENDED and ANSWER_KEY not in world.store
    assert not world.of(c.Bye), "no BYE back"
    assert dict(world.published)[ev.SESSION_ENDED]["reason"] == "bye"


def test_a_new_invite_for_the_key_replaces_the_session() -> None:
    world = World()
    _, first = answered_session(world)
    _, second = answered_session(world, path="msrp://10.0.0.2:7777/peer2;tcp")
    assert first.state is SessionState.ENDED and second.state is SessionState.ACTIVE
    assert world.core.ctx.stats.sessions_ended["replaced"] == 1
    assert world.store[ANSWER_KEY].peer_path == ["msrp://10.0.0.2:7777/peer2;tcp"]


def test_closed_msrp_leg_ends_an_active_session() -> None:
    world = World()
    _, session = answered_session(world)
    assert session.msrp is not None
    session.msrp.close("connection lost")
    world.msrp_event(session, SessionClosed("connection lost"))
    assert session.state is SessionState.ENDED
    assert world.core.ctx.stats.sessions_ended["msrp_closed"] == 1


def test_store_that_lost_a_live_record_gets_it_rebuilt() -> None:
    world = World()
    established(world)
    del world.store[KEY]  # a Redis restart without persistence
    world.advance(1.0)
    txn = world.message(b"after the restart")
    assert world.store[KEY].owner == "n1" and world.store[KEY].state == "active"
    assert world.core.ctx.stats.sessions_rebuilt == 1
    world.msrp_event(world.session(), MessageDelivered("m2"))
    assert txn.status == 200


# -- the session table never lies (issue 16 §1) -------------------------------------------


@pytest.mark.parametrize(
    "path", ["garbage!!", "msrp://10.0.0.2:99999/p;tcp", "msrp://[zzzz::1]:7777/p;tcp"]
)
def test_invite_with_a_bad_msrp_path_is_refused_before_any_record(path: str) -> None:
    world = World()
    txn = world.request(
        sip_request("INVITE", body=msrp_offer(path=path), content_type="application/sdp")
    )
    assert (txn.status, txn.answers[-1].reason) == (400, "Bad MSRP Path")
    assert not world.store and not world.core.ctx.table.sessions() and not world.legs.opened
    assert world.core.ctx.stats.rejected[400] == 1


def test_answer_with_a_bad_msrp_path_fails_the_setup_with_488_and_a_bye() -> None:
    world = World()
    txn = world.message(b"hello")
    invite = world.of(c.Invite)[0].request
    sdp = build_msrp_offer(
        address="10.0.0.2", port=7777, path=["msrp://x:99999/p;tcp"], accept_types=["text/plain"]
    ).to_bytes()
    world.answer_invite(0, answer_2xx(invite, sdp=sdp))
    assert (txn.status, txn.answers[-1].reason) == (488, "Bad MSRP Path In Answer")
    assert world.of(c.Bye) and not world.store and not world.legs.opened


def test_replacing_a_session_whose_peer_went_silent_waits_for_no_bye() -> None:
    """The issue's ghost: A's SIP side is gone, B then C replace it while A's BYE (and B's)
    wait out 64*T1. Each INVITE is answered at once; when the BYEs time out, C still holds
    the key in the table and the store, and closing a replaced leg ends nobody."""
    world = World()
    world.byes_wait = True
    _, a = answered_session(world)
    txn_b, b = answered_session(world, path="msrp://10.0.0.3:7777/b;tcp")
    assert txn_b.status == 200 and len(world.byes) == 1, "B answered while A's BYE waits"
    txn_c, c_ = answered_session(world, path="msrp://10.0.0.4:7777/c;tcp")
    assert txn_c.status == 200 and len(world.byes) == 2
    assert a.state is b.state is SessionState.ENDED and c_.state is SessionState.ACTIVE
    world.answer_bye()  # A's BYE times out
    world.answer_bye()  # B's too
    assert world.session(ANSWER_KEY) is c_
    assert world.store[ANSWER_KEY].sid == c_.record.sid
    assert world.store[ANSWER_KEY].peer_path == ["msrp://10.0.0.4:7777/c;tcp"]
    assert world.core.ctx.stats.sessions_ended["replaced"] == 2
    for old in (a, b):  # their legs' last events: no effect on C
        world.msrp_event(old, SessionClosed("connection lost"))
    assert c_.state is SessionState.ACTIVE and world.session(ANSWER_KEY) is c_
    assert c_.msrp is not None
    c_.msrp.close("connection lost")
    world.msrp_event(c_, SessionClosed("connection lost"))
    assert c_.state is SessionState.ENDED and ANSWER_KEY not in world.store


def test_a_session_ended_forgets_its_key_before_its_bye_is_answered() -> None:
    """MI end with a silent peer: the key is free for a new session at once, and the old
    session's BYE timing out later does not delete the new session's record."""
    world = World()
    world.byes_wait = True
    _, a = answered_session(world)
    world.start(world.core.end_session(ANSWER_KEY, "mi"))
    assert a.state is SessionState.ENDED and ANSWER_KEY not in world.store
    _, b = answered_session(world, path="msrp://10.0.0.3:7777/b;tcp")
    world.answer_bye()
    assert world.store[ANSWER_KEY].sid == b.record.sid and world.session(ANSWER_KEY) is b


def test_a_session_whose_key_another_instance_holds_is_ended_by_the_sweep() -> None:
    """A session without its record is ended (BYE and close), and the record it lost to
    another instance is left alone."""
    world = World()
    _, session = answered_session(world)
    other = dataclasses.replace(world.store[ANSWER_KEY], sid="elsewhere", owner="n2")
    world.store[ANSWER_KEY] = other
    world.procedure(world.core.sweep())
    assert session.state is SessionState.ENDED and world.of(c.Bye)
    assert session.msrp is None and world.legs.opened[0].closed
    assert world.core.ctx.stats.sessions_ended["superseded"] == 1
    assert world.store[ANSWER_KEY] == other


def test_a_refresh_that_finds_another_instance_ends_the_session() -> None:
    world = World()
    established(world)
    session = world.session()
    world.store[KEY] = dataclasses.replace(world.store[KEY], sid="elsewhere")
    world.advance(1.0)
    world.message(b"after")
    assert session.state is SessionState.ENDED
    assert world.core.ctx.stats.sessions_ended["superseded"] == 1
    # The MESSAGE is then served as for a record of ours with no session here: taken over
    # by a new instance (the record's owner is this node).
    successor = world.session()
    assert successor is not session and world.store[KEY].sid == successor.record.sid


def test_a_record_taken_over_gets_a_new_sid_and_only_from_the_instance_it_was_read_from() -> None:
    world = World()
    world.store[KEY] = SessionRecord(key=KEY, sid="old", owner="n0", state="active")
    world.invite_answer = answer_2xx
    txn = world.message(b"hi")
    world.msrp_event(world.session(), MessageDelivered("m1"))
    assert txn.status == 200
    rec = world.store[KEY]
    assert (
        rec.owner == "n1" and rec.sid not in ("", "old") and rec.sid == world.session().record.sid
    )


# -- where requests may go (issue 16 §2: default routing is an open door) ------------------


def test_a_message_for_a_host_not_allowed_is_refused_403_before_any_invite() -> None:
    world = World(allowed_destinations=["page.example", "10.0.0.0/8"])
    txn = world.message(b"hello")  # R-URI sip:bob@msrp.example
    assert (txn.status, txn.answers[-1].reason) == (403, "Destination Not Allowed")
    assert not world.of(c.Invite) and not world.store
    assert world.core.ctx.stats.destinations_refused == 1
    allowed = World(allowed_destinations=["*.example"])
    allowed.invite_answer = answer_2xx
    allowed.message(b"hello")
    assert allowed.of(c.Invite), "msrp.example is under *.example"


def test_an_invite_whose_messages_would_go_to_a_host_not_allowed_is_refused_403() -> None:
    world = World(allowed_destinations=["msrp.example"])
    invite = sip_request(
        "INVITE",
        frm="sip:bob@msrp.example",
        to="sip:alice@page.example",
        body=msrp_offer(),
        content_type="application/sdp",
    )
    txn = world.request(invite)
    assert (txn.status, txn.answers[-1].reason) == (403, "Destination Not Allowed")
    assert not world.store and not world.legs.opened
    assert world.core.ctx.stats.destinations_refused == 1


# -- answered sessions whose MSRP leg never binds (issue 16 §2) ----------------------------


def invite_from(world: World, user: str) -> Any:
    invite = sip_request(
        "INVITE",
        frm=f"sip:{user}@msrp.example",
        to="sip:alice@page.example",
        body=msrp_offer(path=f"msrp://10.0.0.2:7777/{user};tcp"),
        content_type="application/sdp",
        call_id=f"inv-{user}",
    )
    return world.request(invite)


def test_a_source_holds_at_most_max_unbound_per_source_sessions_not_bound_yet() -> None:
    world = World(max_unbound_per_source=2, retry_after=9)
    assert [invite_from(world, u).status for u in ("u1", "u2")] == [200, 200]
    third = invite_from(world, "u3")
    assert (third.status, third.answers[-1].reason) == (503, "Too Many Session Setups")
    assert headers(third)["Retry-After"] == "9"
    assert world.core.ctx.stats.unbound_refused == 1
    world.msrp_event(world.session("alice@page.example-u1@msrp.example"), SessionBound())
    assert invite_from(world, "u4").status == 200, "a bound leg makes room"


def test_a_leg_not_bound_within_bind_timeout_ends_its_session() -> None:
    world = World(bind_timeout=30.0)
    invite_from(world, "never")
    invite_from(world, "bound")
    never = world.session("alice@page.example-never@msrp.example")
    bound = world.session("alice@page.example-bound@msrp.example")
    world.msrp_event(bound, SessionBound())
    world.advance(29.0)
    assert never.state is SessionState.ACTIVE
    world.advance(2.0)
    assert never.state is SessionState.ENDED and bound.state is SessionState.ACTIVE
    assert world.core.ctx.stats.sessions_ended["msrp_not_connected"] == 1
    assert world.of(c.Bye) and "alice@page.example-never@msrp.example" not in world.store
