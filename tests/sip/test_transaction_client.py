"""Client transactions: RFC 3261 §17.1.1 (INVITE) and §17.1.2 (non-INVITE)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from gw.sip.message import Request
from gw.sip.transaction import (
    Address,
    ResponseReceived,
    Send,
    State,
    StrayResponse,
    Terminated,
    TimedOut,
    TransportFailed,
    build_cancel,
    new_branch,
)
from tests.sip.test_transaction_util import (
    SERVER,
    T1,
    T2,
    T4,
    TD,
    TIMEOUT,
    layer,
    of,
    reply,
    request,
    run_until,
    send_times,
)

TCP_SERVER = Address("TCP", "192.0.2.10", 5060)


def _times(start: float, intervals: list[float]) -> list[float]:
    out, t = [start], start
    for i in intervals:
        t += i
        out.append(round(t, 6))
    return out


# -- INVITE client -----------------------------------------------------------------------------
def test_timer_a_doubles_without_cap_and_timer_b_times_out() -> None:
    tl = layer()
    invite = request("INVITE", branch=new_branch())
    key, events = tl.send_request(invite, SERVER, 0.0)
    assert events == [Send(invite, SERVER, key)]
    assert tl.state(key) is State.CALLING
    timed = run_until(tl, 10.0)
    # 1, 2, 4, ... 32 T1: beyond T2 (4 T1), so Timer A is not capped.
    assert send_times(timed) == _times(T1, [2 * T1, 4 * T1, 8 * T1, 16 * T1, 32 * T1])
    assert all(e.message is invite for _, e in timed if isinstance(e, Send))
    timeouts = [(t, e) for t, e in timed if isinstance(e, TimedOut)]
    assert [(round(t, 6), e.key, e.request) for t, e in timeouts] == [(TIMEOUT, key, invite)]
    assert of([e for _, e in timed], Terminated) == [Terminated(key)]
    assert not tl.has(key) and len(tl) == 0 and tl.next_deadline() is None


def test_reliable_invite_is_not_retransmitted_but_times_out() -> None:
    tl = layer()
    tl.send_request(request("INVITE", transport="TCP"), TCP_SERVER, 0.0)
    timed = run_until(tl, 10.0)
    assert send_times(timed) == []
    assert [round(t, 6) for t, e in timed if isinstance(e, TimedOut)] == [TIMEOUT]


def test_provisional_stops_timers_a_and_b_then_2xx_terminates() -> None:
    tl = layer()
    invite = request("INVITE")
    key, _ = tl.send_request(invite, SERVER, 0.0)
    ringing = reply(invite, 180)
    assert tl.receive_response(ringing, 0.005) == [ResponseReceived(key, ringing)]
    assert tl.state(key) is State.PROCEEDING
    assert run_until(tl, 100.0) == []  # no A, no B: an INVITE may ring for long
    again = reply(invite, 183)
    assert tl.receive_response(again, 1.0) == [ResponseReceived(key, again)]
    ok = reply(invite, 200)
    assert tl.receive_response(ok, 2.0) == [ResponseReceived(key, ok), Terminated(key)]
    # The 2xx retransmission (or a forked 2xx) is the dialog layer's, to re-ACK.
    ok2 = reply(invite, 200, to_tag="other")
    assert tl.receive_response(ok2, 2.1) == [StrayResponse(ok2)]


def test_non_2xx_is_acked_per_17_1_1_3_and_timer_d_absorbs_retransmissions() -> None:
    tl = layer()
    invite = request("INVITE", extra=[("Route", "<sip:p1.example;lr>"), ("Route", "<sip:p2;lr>")])
    invite.add("Via", "SIP/2.0/UDP lower.example;branch=z9hG4bKlower")
    invite.body = b"v=0\r\n"
    key, _ = tl.send_request(invite, SERVER, 0.0)
    busy = reply(invite, 486)
    events = tl.receive_response(busy, 0.02)
    assert events[1] == ResponseReceived(key, busy)
    ack = events[0]
    assert isinstance(ack, Send) and ack.dest == SERVER and isinstance(ack.message, Request)
    msg = ack.message
    assert msg.method == "ACK" and msg.uri == invite.uri
    assert msg.get_all("Via") == [invite.get_all("Via")[0]]
    assert msg.get_all("Route") == ["<sip:p1.example;lr>", "<sip:p2;lr>"]
    assert msg.get("From") == invite.get("From") and msg.call_id == invite.call_id
    assert msg.get("To") == busy.get("To") and msg.to.tag == "tt1"
    assert msg.cseq == (1, "ACK") and msg.body == b""
    assert tl.state(key) is State.COMPLETED
    # Retransmitted final responses: ACK again, TU not told.
    assert tl.receive_response(reply(invite, 486), 0.1) == [Send(msg, SERVER, key)]
    assert tl.receive_response(reply(invite, 180), 0.1) == []
    timed = run_until(tl, 10.0)
    assert [(round(t, 6), e) for t, e in timed] == [(round(0.02 + TD, 6), Terminated(key))]
    assert of(tl.receive_response(reply(invite, 486), 5.0), StrayResponse)


def test_timer_d_is_zero_on_reliable_transports() -> None:
    tl = layer()
    invite = request("INVITE", transport="TCP")
    key, _ = tl.send_request(invite, TCP_SERVER, 0.0)
    events = tl.receive_response(reply(invite, 603), 0.1)
    assert [type(e) for e in events] == [Send, ResponseReceived, Terminated]
    assert not tl.has(key) and tl.next_deadline() is None


def test_cancel_is_its_own_transaction_and_gives_up_invite_after_64_t1() -> None:
    tl = layer()
    invite = request("INVITE")
    ikey, _ = tl.send_request(invite, SERVER, 0.0)
    tl.receive_response(reply(invite, 180), 0.01)
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL" and cancel.cseq == (1, "CANCEL")
    assert cancel.top_via.branch == invite.top_via.branch and cancel.get("To") == invite.get("To")
    ckey, _ = tl.send_request(cancel, SERVER, 1.0)
    assert ckey != ikey
    ok = reply(cancel, 200)
    assert tl.receive_response(ok, 1.01) == [ResponseReceived(ckey, ok)]
    assert tl.state(ikey) is State.PROCEEDING  # the 200 to CANCEL does not touch the INVITE
    # No 487 ever comes: §9.1 gives the INVITE up 64*T1 after the CANCEL.
    timed = run_until(tl, 100.0)
    assert [(round(t, 6), e) for t, e in timed if isinstance(e, TimedOut)] == [
        (round(1.0 + TIMEOUT, 6), TimedOut(ikey, invite))
    ]
    assert len(tl) == 0


def test_487_after_cancel_completes_the_invite() -> None:
    tl = layer()
    invite = request("INVITE")
    ikey, _ = tl.send_request(invite, SERVER, 0.0)
    tl.receive_response(reply(invite, 180), 0.01)
    tl.send_request(build_cancel(invite), SERVER, 0.5)
    events = tl.receive_response(reply(invite, 487), 0.6)
    assert of(events, ResponseReceived)[0].key == ikey
    assert not of(run_until(tl, 100.0), TimedOut)


# -- non-INVITE client ---------------------------------------------------------------------------
def test_timer_e_doubles_capped_at_t2_and_timer_f_times_out() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    assert tl.state(key) is State.TRYING
    timed = run_until(tl, 10.0)
    times = send_times(timed)
    gaps = [round(b - a, 6) for a, b in pairwise([0.0, *times])]
    assert gaps[:4] == [T1, 2 * T1, T2, T2]  # 4*T1 == T2 here: capped from then on
    assert set(gaps[2:]) == {T2}
    assert times[-1] < TIMEOUT
    assert [(round(t, 6), e) for t, e in timed if not isinstance(e, Send)] == [
        (TIMEOUT, TimedOut(key, msg)),
        (TIMEOUT, Terminated(key)),
    ]


def test_timer_e_runs_at_t2_in_proceeding() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    tl.receive_response(reply(msg, 100, to_tag=None), 0.005)
    assert tl.state(key) is State.PROCEEDING
    timed = run_until(tl, 10.0)
    times = send_times(timed)
    assert times[0] == T1  # the pending Timer E fires as armed...
    gaps = {round(b - a, 6) for a, b in pairwise(times)}
    assert gaps == {T2}  # ...and is then reset to T2 each time
    assert of([e for _, e in timed], TimedOut) == [TimedOut(key, msg)]  # F still runs


def test_reliable_non_invite_not_retransmitted_timer_f_still_runs() -> None:
    tl = layer()
    tl.send_request(request(transport="TCP"), TCP_SERVER, 0.0)
    timed = run_until(tl, 10.0)
    assert send_times(timed) == []
    assert [round(t, 6) for t, e in timed if isinstance(e, TimedOut)] == [TIMEOUT]


def test_timer_k_absorbs_response_retransmissions() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    ok = reply(msg, 202)
    assert tl.receive_response(ok, 0.015) == [ResponseReceived(key, ok)]
    assert tl.state(key) is State.COMPLETED
    assert tl.receive_response(reply(msg, 202), 0.02) == []
    timed = run_until(tl, 10.0)
    assert [(round(t, 6), e) for t, e in timed] == [(round(0.015 + T4, 6), Terminated(key))]
    late = reply(msg, 202)
    assert tl.receive_response(late, 1.0) == [StrayResponse(late)]


def test_timer_k_is_zero_on_reliable_transports() -> None:
    tl = layer()
    msg = request(transport="TCP")
    key, _ = tl.send_request(msg, TCP_SERVER, 0.0)
    ok = reply(msg, 200)
    assert tl.receive_response(ok, 0.1) == [ResponseReceived(key, ok), Terminated(key)]


def test_final_response_in_proceeding_completes() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    tl.receive_response(reply(msg, 100, to_tag=None), 0.001)
    nok = reply(msg, 404)
    assert tl.receive_response(nok, 0.002) == [ResponseReceived(key, nok)]
    assert tl.state(key) is State.COMPLETED
    assert send_times(run_until(tl, 10.0)) == []  # Timer E stopped


# -- transport errors and TU mistakes ----------------------------------------------------------
def test_transport_error_by_address_fails_every_live_client_transaction() -> None:
    tl = layer()
    invite, msg, done = request("INVITE"), request(branch="z9hG4bKm"), request(branch="z9hG4bKd")
    ikey, _ = tl.send_request(invite, SERVER, 0.0)
    mkey, _ = tl.send_request(msg, SERVER, 0.0)
    dkey, _ = tl.send_request(done, SERVER, 0.0)
    tl.receive_response(reply(done, 200), 0.001)  # completed: the TU has its answer
    other, _ = tl.send_request(request(branch="z9hG4bKo"), Address("UDP", "203.0.113.1", 5060), 0)
    events = tl.transport_error(SERVER, 0.002)
    assert set(of(events, TransportFailed)) == {
        TransportFailed(ikey, invite),
        TransportFailed(mkey, msg),
    }
    assert set(of(events, Terminated)) == {Terminated(ikey), Terminated(mkey)}
    # The completed one keeps absorbing response retransmissions until Timer K: it has
    # nothing left to send, so a transport error does not concern it.
    assert [tl.has(k) for k in (ikey, mkey, dkey, other)] == [False, False, True, True]
    assert tl.transport_error(SERVER, 0.003) == []


def test_transport_error_by_key() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    assert tl.transport_error(key, 0.1) == [TransportFailed(key, msg), Terminated(key)]
    assert tl.next_deadline() is None
    assert tl.transport_error(key, 0.2) == []


def test_send_request_rejects_tu_mistakes() -> None:
    tl = layer()
    with pytest.raises(ValueError, match="cookie"):
        tl.send_request(request(branch="1234"), SERVER, 0.0)
    with pytest.raises(ValueError):
        tl.send_request(request(branch=None), SERVER, 0.0)
    with pytest.raises(ValueError, match="ACK"):
        tl.send_request(request("ACK"), SERVER, 0.0)
    tl.send_request(request(), SERVER, 0.0)
    with pytest.raises(ValueError, match="exists"):
        tl.send_request(request(), SERVER, 0.0)
    no_via = request()
    no_via.remove("Via")
    with pytest.raises(ValueError):
        tl.send_request(no_via, SERVER, 0.0)


def test_new_branch_is_unique_and_rfc3261() -> None:
    branches = {new_branch() for _ in range(1000)}
    assert len(branches) == 1000
    assert all(b.startswith("z9hG4bK") and len(b) > 16 for b in branches)
