"""The loop rules of gw.gateway.loops, without sockets."""

from __future__ import annotations

from gw.gateway.loops import LOOP_HEADER, MAX_MARKS, Hops, hops_of, onward
from gw.sip.message import Request, parse_message


def message(*headers: str) -> Request:
    raw = (
        "MESSAGE sip:bob@b.example SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
        "From: <sip:alice@a.example>;tag=1\r\n"
        "To: <sip:bob@b.example>\r\n"
        "Call-ID: c1\r\n"
        "CSeq: 1 MESSAGE\r\n" + "".join(h + "\r\n" for h in headers) + "Content-Length: 0\r\n\r\n"
    )
    parsed = parse_message(raw.encode())
    assert isinstance(parsed, Request)
    return parsed


def test_a_plain_request_has_no_marks_and_70_hops() -> None:
    assert hops_of(message()) == Hops((), 70)


def test_marks_are_read_from_every_header_and_comma_list() -> None:
    hops = hops_of(message("X-Msrp-Gw: d1, d2", "X-Msrp-Gw: d3", "Max-Forwards: 9"))
    assert hops == Hops(("d1", "d2", "d3"), 9)
    assert hops.passed("d2") and not hops.passed("d4")


def test_onward_adds_our_mark_last_and_one_hop_less() -> None:
    out = onward(Hops(("d1",), 9), "us")
    assert out.headers == ((LOOP_HEADER, "d1, us"),) and out.max_forwards == 8


def test_onward_never_raises_hops_above_a_request_of_our_own() -> None:
    assert onward(Hops((), 200), "us").max_forwards == 70
    assert onward(Hops((), 0), "us").max_forwards == 0


def test_onward_keeps_a_bounded_list_and_our_mark_once() -> None:
    many = (*(f"d{i}" for i in range(40)), "us")
    marks = onward(Hops(many, 70), "us").headers[0][1].split(", ")
    assert len(marks) == MAX_MARKS and marks[-1] == "us" and marks.count("us") == 1
    assert marks[-2] == "d39", "the newest are kept"
