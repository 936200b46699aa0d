"""Matching (§17.1.3, §17.2.3, RFC 2543 fallback), CANCEL, response routing, builders."""

from __future__ import annotations

from collections.abc import Sequence

from gw.sip.message import Request, Response
from gw.sip.transaction import (
    AckReceived,
    Address,
    RequestReceived,
    ResponseReceived,
    Send,
    State,
    StrayResponse,
    TxKey,
    build_response,
    response_address,
)
from gw.sip.uri import parse_via
from tests.sip.test_transaction_util import (
    PEER,
    SERVER,
    layer,
    of,
    on_wire,
    reply,
    request,
    wire_req,
)

REPLY = Address("UDP", "198.51.100.7", 5062)  # sent-by of request() == PEER


def _new(events: Sequence[object]) -> RequestReceived:
    [new] = of(events, RequestReceived)
    return new


# -- server matching ----------------------------------------------------------------------------
def test_retransmission_is_not_delivered_twice_and_gets_the_last_response() -> None:
    tl = layer()
    msg = request()
    new = _new(tl.receive_request(wire_req(msg), PEER, 0.0))
    ok = build_response(new.request, 200, to_tag="x")
    tl.respond(new.key, ok, 0.0)
    for t in (0.1, 0.2, 0.3):
        assert on_wire(tl.receive_request(wire_req(msg), PEER, t)) == on_wire(
            [Send(ok, REPLY, new.key)]
        )
    assert len(tl) == 1


def test_same_branch_different_method_is_another_transaction() -> None:
    tl = layer()
    a = _new(tl.receive_request(request("MESSAGE"), PEER, 0.0))
    b = _new(tl.receive_request(request("OPTIONS"), PEER, 0.0))
    assert a.key != b.key and a.key.branch == b.key.branch and len(tl) == 2


def test_different_sent_by_is_another_transaction_and_host_case_does_not_matter() -> None:
    tl = layer()
    a = _new(tl.receive_request(request(sent_by="host.example:5062"), PEER, 0.0))
    b = _new(tl.receive_request(request(sent_by="other.example:5062"), PEER, 0.0))
    c = _new(tl.receive_request(request(sent_by="host.example:5070"), PEER, 0.0))
    assert len({a.key, b.key, c.key}) == 3
    assert tl.receive_request(request(sent_by="HOST.example:5062"), PEER, 0.1) == []


def test_ack_for_non_2xx_matches_ack_for_2xx_goes_to_the_dialog() -> None:
    tl = layer()
    new = _new(tl.receive_request(request("INVITE"), PEER, 0.0))
    tl.respond(new.key, build_response(new.request, 486, to_tag="t"), 0.0)
    assert tl.receive_request(request("ACK", to_tag="t"), PEER, 0.1) == []
    assert tl.state(new.key) is State.CONFIRMED
    ack2xx = request("ACK", branch="z9hG4bKnew", to_tag="t2", cseq=7)
    assert tl.receive_request(ack2xx, PEER, 0.2) == [AckReceived(ack2xx, PEER)]
    assert len(tl) == 1  # an ACK never creates a transaction


def test_cancel_names_the_invite_it_cancels() -> None:
    tl = layer()
    inv = _new(tl.receive_request(request("INVITE"), PEER, 0.0))
    cancel = request("CANCEL")
    can = _new(tl.receive_request(wire_req(cancel), PEER, 0.5))
    assert can.cancels == inv.key and can.key != inv.key and can.key.method == "CANCEL"
    assert tl.request(inv.key) is inv.request  # to build the 487
    # The TU answers both; each goes through its own transaction.
    ok = build_response(can.request, 200, to_tag="t")
    assert tl.respond(can.key, ok, 0.5) == [Send(ok, REPLY, can.key)]
    terminated = build_response(inv.request, 487, to_tag="t")
    assert tl.respond(inv.key, terminated, 0.5) == [Send(terminated, REPLY, inv.key)]
    # A retransmitted CANCEL is answered, not redelivered.
    assert on_wire(tl.receive_request(wire_req(cancel), PEER, 0.6)) == on_wire(
        [Send(ok, REPLY, can.key)]
    )


def test_cancel_without_invite() -> None:
    tl = layer()
    can = _new(tl.receive_request(request("CANCEL"), PEER, 0.0))
    assert can.cancels is None
    other = _new(tl.receive_request(request("INVITE", sent_by="elsewhere:5060"), PEER, 0.0))
    assert _new(tl.receive_request(request("CANCEL", branch="z9hG4bKx"), PEER, 0.0)).cancels is None
    assert other.key.method == "INVITE"


# -- RFC 2543 fallback ---------------------------------------------------------------------------
def test_rfc2543_retransmission_and_new_requests() -> None:
    for branch in (None, "oldstyle1"):
        tl = layer()
        msg = request(branch=branch)
        new = _new(tl.receive_request(wire_req(msg), PEER, 0.0))
        assert not new.key.branch.startswith("z9hG4bK")
        ok = build_response(new.request, 200, to_tag="x")
        tl.respond(new.key, ok, 0.0)
        assert on_wire(tl.receive_request(wire_req(msg), PEER, 0.1)) == on_wire(
            [Send(ok, REPLY, new.key)]
        )
        assert _new(tl.receive_request(request(branch=branch, cseq=2), PEER, 0.1))
        assert _new(tl.receive_request(request(branch=branch, call_id="c2"), PEER, 0.1))
        assert _new(tl.receive_request(request(branch=branch, uri="sip:carol@x"), PEER, 0.1))
        assert _new(tl.receive_request(request(branch=branch, sent_by="h:1"), PEER, 0.1))
        assert len(tl) == 5


def test_rfc2543_ack_matches_by_the_to_tag_of_the_response() -> None:
    tl = layer()
    new = _new(tl.receive_request(request("INVITE", branch=None), PEER, 0.0))
    tl.respond(new.key, build_response(new.request, 486, to_tag="resp"), 0.0)
    wrong = request("ACK", branch=None, to_tag="other")
    assert tl.receive_request(wrong, PEER, 0.1) == [AckReceived(wrong, PEER)]
    assert tl.state(new.key) is State.COMPLETED
    assert tl.receive_request(request("ACK", branch=None, to_tag="resp"), PEER, 0.1) == []
    assert tl.state(new.key) is State.CONFIRMED


def test_rfc2543_cancel_matches_invite() -> None:
    tl = layer()
    inv = _new(tl.receive_request(request("INVITE", branch=None), PEER, 0.0))
    can = _new(tl.receive_request(request("CANCEL", branch=None), PEER, 0.1))
    assert can.cancels == inv.key


# -- client matching and strays ------------------------------------------------------------------
def test_stray_responses() -> None:
    tl = layer()
    msg = request()
    key, _ = tl.send_request(msg, SERVER, 0.0)
    unknown = reply(request(branch="z9hG4bKunknown"), 200)
    assert tl.receive_response(unknown, 0.1) == [StrayResponse(unknown)]
    wrong_method = reply(request("OPTIONS"), 200)  # same branch, CSeq method differs
    assert tl.receive_response(wrong_method, 0.1) == [StrayResponse(wrong_method)]
    no_via = Response(headers=[("CSeq", "1 MESSAGE")], status=200)
    assert tl.receive_response(no_via, 0.1) == [StrayResponse(no_via)]
    bad_cseq = Response(headers=[("Via", msg.get_all("Via")[0]), ("CSeq", "x")], status=200)
    assert tl.receive_response(bad_cseq, 0.1) == [StrayResponse(bad_cseq)]
    ok = reply(msg, 200)
    assert tl.receive_response(ok, 0.2) == [ResponseReceived(key, ok)]


def test_malformed_requests_are_dropped_not_raised() -> None:
    tl = layer()
    no_via = request()
    no_via.remove("Via")
    assert tl.receive_request(no_via, PEER, 0.0) == []
    bad = request(branch=None)  # RFC 2543 path needs From/To/Call-ID/CSeq
    bad.set("From", "<<<")
    assert tl.receive_request(bad, PEER, 0.0) == []
    bad_cseq = request(branch=None)
    bad_cseq.set("CSeq", "one MESSAGE")
    assert tl.receive_request(bad_cseq, PEER, 0.0) == []
    assert len(tl) == 0


# -- response routing (§18.2.1, §18.2.2, RFC 3581) -----------------------------------------------
SRC = Address("UDP", "203.0.113.9", 34567)


def test_response_address() -> None:
    def via(text: str) -> Address:
        return response_address(parse_via(f"SIP/2.0/UDP {text};branch=z9hG4bKx"), SRC)

    assert via("10.0.0.1:5070;received=203.0.113.9") == Address("UDP", "203.0.113.9", 5070)
    assert via("10.0.0.1") == Address("UDP", "203.0.113.9", 5060)  # source host, port 5060
    assert via("10.0.0.1:5070;rport") == Address("UDP", "203.0.113.9", 34567)
    assert via("10.0.0.1;rport=4000;received=192.0.2.5") == Address("UDP", "192.0.2.5", 4000)
    assert via("10.0.0.1:5070;maddr=239.1.1.1;ttl=1") == Address("UDP", "239.1.1.1", 5070)
    tcp = Address("TCP", "203.0.113.9", 50000)
    reliable = response_address(parse_via("SIP/2.0/TCP h.example:5060;rport;branch=z9hG4bKx"), tcp)
    assert reliable == tcp  # the existing connection


def test_received_and_rport_are_stamped_and_used() -> None:
    tl = layer()
    msg = request(sent_by="10.0.0.1:5070", via_params=";rport")
    msg.add("Via", "SIP/2.0/UDP upstream.example;branch=z9hG4bKup")
    new = _new(tl.receive_request(wire_req(msg), SRC, 0.0))
    top = new.request.top_via
    assert top.received == "203.0.113.9" and top.rport == 34567
    assert len(new.request.vias) == 2 and new.request.vias[1].host == "upstream.example"
    ok = build_response(new.request, 200, to_tag="t")
    assert ok.top_via.rport == 34567  # copied into the response for the client to see
    [send] = tl.respond(new.key, ok, 0.0)
    assert isinstance(send, Send) and send.dest == Address("UDP", "203.0.113.9", 34567)
    # No rport: received only when sent-by differs, reply to the sent-by port.
    new2 = _new(tl.receive_request(request(sent_by="10.0.0.1:5070", branch="z9hG4bK2"), SRC, 0.0))
    assert new2.request.top_via.received == "203.0.113.9"
    assert new2.request.top_via.rport is None
    [send] = tl.respond(new2.key, build_response(new2.request, 200), 0.0)
    assert isinstance(send, Send) and send.dest == Address("UDP", "203.0.113.9", 5070)
    same = _new(tl.receive_request(request(sent_by="203.0.113.9", branch="z9hG4bK3"), SRC, 0.0))
    assert same.request.top_via.received is None


# -- builders ----------------------------------------------------------------------------------
def test_build_response_copies_the_right_headers() -> None:
    req = request("INVITE", extra=[("Timestamp", "1.5"), ("Contact", "<sip:a@h>")])
    req.add("Via", "SIP/2.0/UDP second.example;branch=z9hG4bK2")
    ok = build_response(req, 200, to_tag="abc", headers=[("Server", "gw")])
    assert ok.status == 200 and ok.reason == "OK"
    assert ok.get_all("Via") == req.get_all("Via")
    assert [k for k, _ in ok.headers] == ["Via", "From", "To", "Call-ID", "CSeq", "Via", "Server"]
    assert ok.to.tag == "abc" and ok.get("Timestamp") is None and ok.get("Contact") is None
    trying = build_response(req, 100, to_tag="abc")
    assert trying.to.tag is None and trying.get("Timestamp") == "1.5"
    assert trying.reason == "Trying"
    tagged = build_response(request(to_tag="old"), 486, "Busy", to_tag="new")
    assert tagged.to.tag == "old" and tagged.reason == "Busy"


def test_build_response_tolerates_a_broken_request() -> None:
    req = Request(headers=[("To", "<<broken")], method="MESSAGE")
    resp = build_response(req, 400, to_tag="t")
    assert resp.status == 400 and resp.get("To") == "<<broken;tag=t"


def test_keys_are_hashable_and_distinct_by_role() -> None:
    assert TxKey("z9hG4bKa", "INVITE") != TxKey("z9hG4bKa", "INVITE", "", True)
    assert len({TxKey("b", "M"), TxKey("b", "M")}) == 1
