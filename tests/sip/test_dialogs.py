"""The dialog layer (gw/sip/dialogs.py): INVITE/2xx/ACK rules on a fake clock, no sockets.

Each test names the RFC 3261 rule it checks. Both cores are driven by hand, as the
endpoint drives them: the transaction layer says what it matched, the dialog layer what
the transaction user owes the peer.
"""

from __future__ import annotations

import pytest

from gw.sip.dialog import Dialog, DialogError
from gw.sip.dialogs import AckMissing, DialogEvent, DialogLayer, Refusal
from gw.sip.message import Request, Response
from gw.sip.transaction import (
    AckReceived,
    Address,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    TransactionLayer,
)
from tests.sip.test_transaction_util import (
    PEER,
    PEER_TCP,
    SERVER,
    T1,
    T2,
    TIMEOUT,
    TIMERS,
    of,
    reply,
    request,
    wire_req,
    wire_resp,
)

CONTACT = ("Contact", "<sip:alice@198.51.100.7:5062>")


def dialogs(**kwargs: int) -> DialogLayer:
    return DialogLayer(TIMERS, **kwargs)


def run_until(layer: DialogLayer, end: float) -> list[tuple[float, DialogEvent]]:
    """Fire every dialog timer due up to `end`, each exactly at its deadline."""
    out: list[tuple[float, DialogEvent]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end + 1e-9:
        out.extend((deadline, e) for e in layer.on_timer(deadline))
    return out


def invite_in(**kwargs: object) -> Request:
    """An INVITE as received from PEER (parsed off the wire)."""
    return wire_req(request("INVITE", extra=[CONTACT], **kwargs))  # type: ignore[arg-type]


def our_2xx(invite: Request, tag: str = "ours") -> Response:
    ok = reply(invite, 200, to_tag=tag)
    ok.add("Contact", "<sip:gw@192.0.2.1:5060>")
    return ok


def ack_for(invite: Request, response: Response) -> Request:
    """The peer's ACK for our 2xx: a new transaction with the INVITE's CSeq number."""
    ack = request(
        "ACK",
        branch="z9hG4bKack",
        cseq=invite.cseq[0],
        to_tag=response.to.tag,
        call_id=invite.call_id,
    )
    return wire_req(ack)


# -- UAS: §12.1.1, §13.3.1.4 ------------------------------------------------------------------
def test_our_2xx_to_an_invite_creates_the_dialog_12_1_1() -> None:
    layer = dialogs()
    invite = invite_in()
    dialog = layer.send_2xx(invite, our_2xx(invite, "ours"), PEER, 0.0)
    assert dialog is not None and layer.dialogs == {dialog.id: dialog}
    assert (dialog.call_id, dialog.local_tag, dialog.remote_tag) == (invite.call_id, "ours", "ft1")
    assert dialog.remote_seq == 1 and str(dialog.remote_target) == "sip:alice@198.51.100.7:5062"


def test_2xx_is_retransmitted_t1_doubling_to_t2_until_64_t1_then_ack_missing_13_3_1_4() -> None:
    layer = dialogs()
    invite = invite_in()
    ok = our_2xx(invite)
    dialog = layer.send_2xx(invite, ok, PEER, 0.0)
    timed = run_until(layer, 100.0)
    sends = [(round(t, 6), e) for t, e in timed if isinstance(e, Send)]
    expected, t, interval = [], T1, T1
    while t < TIMEOUT - 1e-9:
        expected.append(round(t, 6))
        interval = min(2 * interval, T2)
        t += interval
    assert [t for t, _ in sends] == expected
    assert all(e.message is ok and e.dest == PEER for _, e in sends)
    assert [(round(t, 6), e) for t, e in timed if isinstance(e, AckMissing)] == [
        (round(TIMEOUT, 6), AckMissing(invite.call_id, dialog))
    ]
    assert layer.next_deadline() is None and not layer.awaiting_ack(invite)


def test_the_ack_stops_the_retransmissions_13_3_1_4() -> None:
    layer = dialogs()
    invite = invite_in()
    ok = our_2xx(invite)
    layer.send_2xx(invite, ok, PEER, 0.0)
    assert len(of((e for _, e in run_until(layer, 3 * T1)), Send)) == 2
    assert layer.receive_ack(ack_for(invite, ok))
    assert run_until(layer, 100.0) == [] and layer.next_deadline() is None
    assert not layer.receive_ack(ack_for(invite, ok)), "a second ACK acknowledges nothing"


def test_2xx_on_a_reliable_transport_is_not_retransmitted_but_still_waits_for_the_ack() -> None:
    layer = dialogs()
    invite = invite_in(transport="TCP")
    dialog = layer.send_2xx(invite, our_2xx(invite), PEER_TCP, 0.0)
    assert run_until(layer, 100.0) == [(TIMEOUT, AckMissing(invite.call_id, dialog))]


def test_no_ack_for_a_dialog_already_ended_asks_for_no_bye() -> None:
    layer = dialogs()
    invite = invite_in()
    ok = our_2xx(invite, "ours")
    assert layer.send_2xx(invite, ok, PEER, 0.0) is not None
    bye = wire_req(request("BYE", branch="z9hG4bKbye", cseq=2, to_tag="ours"))
    assert isinstance(layer.receive_request(bye), Dialog) and layer.dialogs == {}
    missing = of((e for _, e in run_until(layer, 100.0)), AckMissing)
    assert missing == [AckMissing(invite.call_id, None)]


def test_an_invite_that_cannot_make_a_dialog_still_has_its_2xx_retransmitted() -> None:
    layer = dialogs()
    invite = wire_req(request("INVITE"))  # no Contact (§12.1.1 needs one)
    assert layer.send_2xx(invite, our_2xx(invite), PEER, 0.0) is None
    assert layer.dialogs == {}
    assert of((e for _, e in run_until(layer, 100.0)), AckMissing) == [
        AckMissing(invite.call_id, None)
    ]


def test_2xx_to_a_reinvite_keeps_the_dialog_and_is_retransmitted_too() -> None:
    layer = dialogs()
    invite = invite_in()
    dialog = layer.send_2xx(invite, our_2xx(invite, "ours"), PEER, 0.0)
    reinvite = wire_req(
        request("INVITE", branch="z9hG4bKre", cseq=2, to_tag="ours", extra=[CONTACT])
    )
    assert layer.receive_request(reinvite) is dialog
    ok = our_2xx(reinvite, "ours")
    assert layer.send_2xx(reinvite, ok, PEER, 1.0, dialog) is dialog
    assert len(layer.dialogs) == 1
    assert layer.awaiting_ack(invite) and layer.awaiting_ack(reinvite)
    assert layer.receive_ack(ack_for(reinvite, ok)) and not layer.awaiting_ack(reinvite)


# -- requests in dialogs: §12.2.2 -----------------------------------------------------------
def test_request_with_a_to_tag_matching_no_dialog_is_refused_with_481_12_2_2() -> None:
    layer = dialogs()
    stray = wire_req(request("BYE", to_tag="unknown"))
    assert layer.receive_request(stray) == Refusal(481, "Call/Transaction Does Not Exist")


def test_request_without_to_tag_is_out_of_dialog() -> None:
    assert dialogs().receive_request(wire_req(request("MESSAGE"))) is None


def test_in_dialog_request_with_an_old_cseq_is_refused_with_500_12_2_2() -> None:
    layer = dialogs()
    invite = invite_in(cseq=5)
    dialog = layer.send_2xx(invite, our_2xx(invite, "ours"), PEER, 0.0)
    info = wire_req(request("INFO", branch="z9hG4bKi1", cseq=6, to_tag="ours"))
    assert layer.receive_request(info) is dialog
    old = wire_req(request("INFO", branch="z9hG4bKi2", cseq=6, to_tag="ours"))
    assert layer.receive_request(old) == Refusal(500, "CSeq Out Of Order")


def test_bye_we_send_ends_the_dialog_15_1_1() -> None:
    layer = dialogs()
    invite = invite_in()
    dialog = layer.send_2xx(invite, our_2xx(invite, "ours"), PEER, 0.0)
    assert dialog is not None
    layer.end(dialog)
    assert layer.dialogs == {}
    late = wire_req(request("INFO", branch="z9hG4bKi1", cseq=2, to_tag="ours"))
    assert layer.receive_request(late) == Refusal(481, "Call/Transaction Does Not Exist")


# -- UAC: §12.1.2, §13.2.2.4 ------------------------------------------------------------------
def our_invite() -> Request:
    """An INVITE we sent (From tag ft1) through a loose router."""
    return request(
        "INVITE",
        branch="z9hG4bKinv",
        sent_by="192.0.2.1:5060",
        cseq=3,
        extra=[("Contact", "<sip:gw@192.0.2.1:5060>")],
    )


def their_2xx(invite: Request, tag: str = "tt1", contact: str = "sip:bob@203.0.113.5") -> Response:
    ok = reply(invite, 200, to_tag=tag)
    ok.add("Contact", f"<{contact}>")
    ok.add("Record-Route", "<sip:proxy.example.com;lr>")
    return wire_resp(ok)


def test_2xx_to_our_invite_creates_the_dialog_and_its_ack_13_2_2_4() -> None:
    layer = dialogs()
    invite = our_invite()
    dialog, ack = layer.receive_2xx(invite, their_2xx(invite))
    assert layer.dialogs == {dialog.id: dialog}
    assert (dialog.local_tag, dialog.remote_tag, dialog.invite_seq) == ("ft1", "tt1", 3)
    assert ack.method == "ACK" and ack.cseq == (3, "ACK")
    assert str(ack.uri) == "sip:bob@203.0.113.5"
    assert ack.get_all("Route") == ["<sip:proxy.example.com;lr>"]
    assert ack.to.tag == "tt1" and ack.from_.tag == "ft1" and ack.get("Via") is None


def test_2xx_without_contact_makes_no_dialog() -> None:
    layer = dialogs()
    invite = our_invite()
    with pytest.raises(DialogError):
        layer.receive_2xx(invite, reply(invite, 200))
    assert layer.dialogs == {}


def test_a_retransmitted_2xx_gets_the_same_ack_again_13_2_2_4() -> None:
    tl, layer = TransactionLayer(TIMERS), dialogs()
    invite = our_invite()
    key, _ = tl.send_request(invite, SERVER, 0.0)
    ok = their_2xx(invite)
    assert tl.receive_response(ok, 0.1)[0] == ResponseReceived(key, ok)
    _, ack = layer.receive_2xx(invite, ok)
    ack.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKack", first=True)
    proxy = Address("UDP", "192.0.2.20", 5060)
    assert layer.send_ack(ack, proxy) == [Send(ack, proxy)]
    # The far end did not get it: its 2xx comes again, past the INVITE transaction.
    again = their_2xx(invite)
    stray = tl.receive_response(again, 0.6)
    assert stray == [StrayResponse(again)]
    assert layer.receive_stray(again) == [Send(ack, proxy)]
    assert layer.receive_stray(again) == [Send(ack, proxy)], "each retransmission"


def test_only_a_2xx_to_an_invite_we_acked_is_acked_again() -> None:
    layer = dialogs()
    invite = our_invite()
    _, ack = layer.receive_2xx(invite, their_2xx(invite))
    layer.send_ack(ack, SERVER)
    forked = their_2xx(invite, tag="fork2")  # another UAS: no dialog kept for it
    not_2xx = wire_resp(reply(invite, 486))
    other_seq = wire_resp(reply(request("INVITE", cseq=4, extra=[CONTACT]), 200))
    for response in (forked, not_2xx, other_seq):
        assert layer.receive_stray(response) == []


def test_the_ack_cache_is_bounded_oldest_first() -> None:
    layer = dialogs(max_acks=2)
    acks = []
    for n in range(3):
        invite = request("INVITE", branch=f"z9hG4bK{n}", call_id=f"c{n}", extra=[CONTACT])
        _, ack = layer.receive_2xx(invite, their_2xx(invite))
        layer.send_ack(ack, SERVER)
        acks.append((invite, ack))
    (first, _), *kept = acks
    assert layer.receive_stray(their_2xx(first)) == []
    assert [layer.receive_stray(their_2xx(inv)) for inv, _ in kept] == [
        [Send(ack, SERVER)] for _, ack in kept
    ]


def test_2xx_to_a_reinvite_refreshes_the_target_and_acks_its_cseq_12_2_1_2() -> None:
    layer = dialogs()
    invite = our_invite()
    dialog, _ = layer.receive_2xx(invite, their_2xx(invite))
    reinvite = dialog.create_request("INVITE")
    reinvite.add("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKre", first=True)
    moved = their_2xx(reinvite, contact="sip:bob@203.0.113.99")
    same, ack = layer.receive_2xx(reinvite, moved, dialog)
    assert same is dialog and len(layer.dialogs) == 1
    assert str(dialog.remote_target) == "sip:bob@203.0.113.99" == str(ack.uri)
    assert ack.cseq == (reinvite.cseq[0], "ACK") and reinvite.cseq[0] == 4


# -- the transaction layer hands ACKs for 2xx over -------------------------------------------
def test_ack_for_our_2xx_reaches_the_dialog_layer_through_the_transaction_layer() -> None:
    tl, layer = TransactionLayer(TIMERS), dialogs()
    invite = invite_in()
    [received] = of(tl.receive_request(invite, PEER, 0.0), RequestReceived)
    key = received.key
    ok = our_2xx(invite)
    tl.respond(key, ok, 0.01)
    layer.send_2xx(invite, ok, PEER, 0.01)
    ack = ack_for(invite, ok)
    assert tl.receive_request(ack, PEER, 0.2) == [AckReceived(ack, PEER)]
    assert layer.receive_ack(ack) and layer.next_deadline() is None


# -- CANCEL: §9.1 -----------------------------------------------------------------------------
def test_cancel_is_built_by_build_cancel_and_goes_where_the_invite_went_9_1() -> None:
    tl = TransactionLayer(TIMERS)
    invite = our_invite()
    invite.add("Route", "<sip:proxy.example.com;lr>")
    tl.send_request(invite, SERVER, 0.0)
    tl.receive_response(wire_resp(reply(invite, 180)), 0.05)
    elsewhere = Address("TCP", "203.0.113.1", 5060)
    started = tl.cancel(invite, 0.1, elsewhere)
    assert started is not None
    key, events = started
    [send] = of(events, Send)
    cancel = send.message
    assert isinstance(cancel, Request) and send.dest == SERVER, "the INVITE's destination"
    assert key.method == "CANCEL" and key.branch == invite.top_via.branch
    assert cancel.method == "CANCEL" and cancel.uri == invite.uri
    assert cancel.cseq == (invite.cseq[0], "CANCEL")
    assert cancel.get_all("Via") == invite.get_all("Via")[:1]
    for name in ("From", "To", "Call-ID", "Route"):
        assert cancel.get_all(name) == invite.get_all(name), name


def test_cancel_without_an_invite_transaction_needs_a_destination() -> None:
    tl = TransactionLayer(TIMERS)
    invite = our_invite()
    assert tl.cancel(invite, 0.0) is None
    started = tl.cancel(invite, 0.0, SERVER)
    assert started is not None and of(started[1], Send)[0].dest == SERVER
