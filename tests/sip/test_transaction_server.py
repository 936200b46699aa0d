"""Server transactions: RFC 3261 §17.2.1 (INVITE, with RFC 6026 Accepted) and §17.2.2."""

from __future__ import annotations

from itertools import pairwise

from gw.sip.message import Response
from gw.sip.transaction import (
    AckReceived,
    AckTimeout,
    Address,
    RequestReceived,
    Send,
    State,
    Terminated,
    TransportFailed,
    build_response,
)
from tests.sip.test_transaction_util import (
    PEER,
    PEER_TCP,
    T1,
    T2,
    T4,
    TIMEOUT,
    layer,
    of,
    on_wire,
    request,
    run_until,
    send_times,
    sent,
    wire_req,
)

REPLY = Address("UDP", "198.51.100.7", 5062)  # Via sent-by == source here


# -- non-INVITE server ---------------------------------------------------------------------------
def test_non_invite_trying_proceeding_completed_and_timer_j() -> None:
    tl = layer()
    msg = request()
    events = tl.receive_request(wire_req(msg), PEER, 0.0)
    [new] = events
    assert isinstance(new, RequestReceived) and new.source == PEER and new.cancels is None
    key = new.key
    assert tl.state(key) is State.TRYING
    assert tl.receive_request(wire_req(msg), PEER, 0.001) == []  # Trying: absorbed
    trying = build_response(new.request, 100)
    assert tl.respond(key, trying, 0.002) == [Send(trying, REPLY, key)]
    assert tl.state(key) is State.PROCEEDING
    assert tl.receive_request(wire_req(msg), PEER, 0.003) == [Send(trying, REPLY, key)]
    ok = build_response(new.request, 200, to_tag="x")
    assert tl.respond(key, ok, 0.004) == [Send(ok, REPLY, key)]
    assert tl.state(key) is State.COMPLETED
    # Completed: the retransmission gets the final response again, the TU sees nothing.
    assert on_wire(tl.receive_request(wire_req(msg), PEER, 0.1)) == on_wire([Send(ok, REPLY, key)])
    assert tl.respond(key, build_response(new.request, 500), 0.1) == []  # too late
    timed = run_until(tl, 10.0)
    assert [(round(t, 6), e) for t, e in timed] == [(round(0.004 + TIMEOUT, 6), Terminated(key))]
    # After Timer J the same request is new again.
    assert of(tl.receive_request(wire_req(msg), PEER, 11.0), RequestReceived)


def test_timer_j_is_zero_on_reliable_transports() -> None:
    tl = layer()
    [new] = tl.receive_request(request(transport="TCP"), PEER_TCP, 0.0)
    assert isinstance(new, RequestReceived)
    ok = build_response(new.request, 200)
    assert tl.respond(new.key, ok, 0.1) == [Send(ok, PEER_TCP, new.key), Terminated(new.key)]


def test_unanswered_non_invite_is_dropped_after_64_t1() -> None:
    tl = layer()
    [new] = tl.receive_request(request(), PEER, 0.0)
    assert isinstance(new, RequestReceived)
    assert [(round(t, 6), e) for t, e in run_until(tl, 10.0)] == [(TIMEOUT, Terminated(new.key))]
    assert tl.respond(new.key, build_response(new.request, 200), 1.0) == []


# -- INVITE server ----------------------------------------------------------------------------
def test_invite_gets_100_trying_at_once_and_on_retransmission() -> None:
    tl = layer()
    invite = request("INVITE", to_tag=None, extra=[("Timestamp", "54.2")])
    events = tl.receive_request(wire_req(invite), PEER, 0.0)
    send, new = events  # the 100 first: a TU refusing at once answers after it
    assert isinstance(new, RequestReceived) and isinstance(send, Send)
    trying = send.message
    assert isinstance(trying, Response) and trying.status == 100
    assert trying.to.tag is None and trying.get("Timestamp") == "54.2"
    assert tl.state(new.key) is State.PROCEEDING
    assert tl.receive_request(wire_req(invite), PEER, 0.1) == [Send(trying, REPLY, new.key)]
    ringing = build_response(new.request, 180, to_tag="t")
    assert ringing.get("Timestamp") is None
    tl.respond(new.key, ringing, 0.2)
    assert tl.receive_request(wire_req(invite), PEER, 0.3) == [Send(ringing, REPLY, new.key)]
    assert run_until(tl, 100.0) == []  # Proceeding has no timer: the TU decides


def test_send_trying_can_be_disabled() -> None:
    tl = layer(send_trying=False)
    invite = request("INVITE")
    assert [type(e) for e in tl.receive_request(wire_req(invite), PEER, 0.0)] == [RequestReceived]
    assert tl.receive_request(wire_req(invite), PEER, 0.1) == []


def test_timer_g_retransmits_capped_at_t2_and_timer_h_reports_ack_timeout() -> None:
    tl = layer()
    [_, new] = tl.receive_request(request("INVITE"), PEER, 0.0)
    assert isinstance(new, RequestReceived)
    busy = build_response(new.request, 486, to_tag="t")
    assert tl.respond(new.key, busy, 0.0) == [Send(busy, REPLY, new.key)]
    assert tl.state(new.key) is State.COMPLETED
    timed = run_until(tl, 10.0)
    times = send_times(timed)
    gaps = [round(b - a, 6) for a, b in pairwise([0.0, *times])]
    assert gaps[:3] == [T1, 2 * T1, T2] and set(gaps[2:]) == {T2}
    assert all(m is busy for m in sent(e for _, e in timed))
    assert [(round(t, 6), e) for t, e in timed if not isinstance(e, Send)] == [
        (TIMEOUT, AckTimeout(new.key)),
        (TIMEOUT, Terminated(new.key)),
    ]


def test_ack_confirms_and_timer_i_absorbs_acks() -> None:
    tl = layer()
    invite = request("INVITE")
    [_, new] = tl.receive_request(wire_req(invite), PEER, 0.0)
    assert isinstance(new, RequestReceived)
    busy = build_response(new.request, 486, to_tag="t")
    tl.respond(new.key, busy, 0.0)
    assert send_times(run_until(tl, 0.015)) == [T1]
    ack = request("ACK", to_tag="t")  # same branch: the ACK for the non-2xx
    assert tl.receive_request(wire_req(ack), PEER, 0.02) == []
    assert tl.state(new.key) is State.CONFIRMED
    assert tl.receive_request(wire_req(ack), PEER, 0.03) == []  # absorbed
    assert tl.receive_request(wire_req(invite), PEER, 0.03) == []  # absorbed too
    timed = run_until(tl, 10.0)
    assert [(round(t, 6), e) for t, e in timed] == [(round(0.02 + T4, 6), Terminated(new.key))]


def test_reliable_invite_server_no_g_but_h_and_i_zero() -> None:
    tl = layer()
    [_, new] = tl.receive_request(request("INVITE", transport="TCP"), PEER_TCP, 0.0)
    assert isinstance(new, RequestReceived)
    tl.respond(new.key, build_response(new.request, 404, to_tag="t"), 0.0)
    timed = run_until(tl, 10.0)
    assert send_times(timed) == []
    assert [(round(t, 6), e) for t, e in timed] == [
        (TIMEOUT, AckTimeout(new.key)),
        (TIMEOUT, Terminated(new.key)),
    ]
    [_, new2] = tl.receive_request(request("INVITE", branch="z9hG4bK2"), PEER_TCP, 20.0)
    assert isinstance(new2, RequestReceived)
    tl.respond(new2.key, build_response(new2.request, 404, to_tag="t"), 20.0)
    ack = request("ACK", branch="z9hG4bK2", to_tag="t")
    assert tl.receive_request(ack, PEER_TCP, 20.1) == [Terminated(new2.key)]  # Timer I = 0


def test_rfc6026_accepted_and_timer_l() -> None:
    tl = layer()
    invite = request("INVITE")
    [_, new] = tl.receive_request(wire_req(invite), PEER, 0.0)
    assert isinstance(new, RequestReceived)
    ok = build_response(new.request, 200, to_tag="t")
    assert tl.respond(new.key, ok, 0.1) == [Send(ok, REPLY, new.key)]
    assert tl.state(new.key) is State.ACCEPTED
    assert tl.receive_request(wire_req(invite), PEER, 0.2) == []  # absorbed, not to the TU
    # The TU retransmits its 2xx through the transaction; the transaction never does.
    assert tl.respond(new.key, ok, 0.11) == [Send(ok, REPLY, new.key)]
    assert tl.respond(new.key, build_response(new.request, 500), 0.12) == []
    ack = wire_req(request("ACK", branch="z9hG4bKack2xx", to_tag="t"))
    assert tl.receive_request(ack, PEER, 0.3) == [AckReceived(ack, PEER)]
    same_branch = wire_req(request("ACK", to_tag="t"))  # matches: passed to the TU (6026)
    assert tl.receive_request(same_branch, PEER, 0.3) == [AckReceived(same_branch, PEER)]
    timed = run_until(tl, 10.0)
    assert [(round(t, 6), e) for t, e in timed] == [(round(0.1 + TIMEOUT, 6), Terminated(new.key))]


# -- failures and TU mistakes ----------------------------------------------------------------
def test_server_transport_error() -> None:
    tl = layer()
    [_, new] = tl.receive_request(request("INVITE", transport="TCP"), PEER_TCP, 0.0)
    [msg] = tl.receive_request(request(branch="z9hG4bKm", transport="TCP"), PEER_TCP, 0.0)
    assert isinstance(new, RequestReceived) and isinstance(msg, RequestReceived)
    events = tl.transport_error(PEER_TCP, 0.1)
    assert set(events) == {
        TransportFailed(new.key, new.request),
        TransportFailed(msg.key, msg.request),
        Terminated(new.key),
        Terminated(msg.key),
    }
    assert len(tl) == 0 and tl.next_deadline() is None


def test_respond_to_unknown_or_client_key_is_ignored() -> None:
    tl = layer()
    req = request()
    ckey, _ = tl.send_request(request(), Address("UDP", "192.0.2.1", 5060), 0.0)
    assert tl.respond(ckey, build_response(req, 200), 0.0) == []
    [new] = tl.receive_request(req, PEER, 0.0)
    assert isinstance(new, RequestReceived)
    tl.terminate(new.key)
    assert tl.respond(new.key, build_response(req, 200), 0.0) == []
    assert tl.terminate(new.key) == []
