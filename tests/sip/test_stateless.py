"""Stateless answers from raw bytes (overload shedding): what is copied, what is refused."""

from __future__ import annotations

import pytest

from gw.sip.message import Response, parse_message
from gw.sip.stateless import answer, peek

MESSAGE = (
    b"MESSAGE sip:bob@example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKa;rport\r\n"
    b"v: SIP/2.0/UDP 10.0.0.9:5080;branch=z9hG4bKb\r\n"
    b"Max-Forwards: 70\r\n"
    b"f: <sip:alice@example.com>;tag=ft\r\n"
    b"To: <sip:bob@example.net>\r\n"
    b"i: cid-1@10.0.0.1\r\n"
    b"CSeq: 7 MESSAGE\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 2\r\n\r\nhi"
)


def test_answer_copies_the_lines_a_response_needs_and_tags_to() -> None:
    raw = peek(MESSAGE)
    assert raw is not None and raw.method == "MESSAGE" and not raw.to_tagged
    assert raw.call_id == "cid-1@10.0.0.1"
    data = answer(raw, 503, "Too Many Session Setups", headers=[("Retry-After", "5")])
    response = parse_message(data)
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (503, "Too Many Session Setups")
    assert [v.sent_by for v in response.vias] == ["10.0.0.1:5070", "10.0.0.9:5080"]
    assert response.from_.tag == "ft" and response.call_id == "cid-1@10.0.0.1"
    assert response.cseq == (7, "MESSAGE")
    assert response.to.tag, "a final response tags To (RFC 3261 8.2.6.2)"
    assert response.get("Retry-After") == "5" and response.body == b""
    assert (
        answer(raw, 503, "Too Many Session Setups").split(b"\r\n")[3:5] == data.split(b"\r\n")[3:5]
    ), "a retransmission gets the same tag"


def test_a_tag_already_there_is_kept() -> None:
    raw = peek(MESSAGE.replace(b"To: <sip:bob@example.net>", b"t: <sip:bob@example.net>;tag=x"))
    assert raw is not None and raw.to_tagged
    response = parse_message(answer(raw, 481, "Call/Transaction Does Not Exist"))
    assert isinstance(response, Response) and response.to.tag == "x"


def test_reply_port_follows_rport_else_the_sent_by_port() -> None:
    raw = peek(MESSAGE)
    assert raw is not None and raw.reply_port(40000) == 40000  # rport: the source port
    plain = peek(MESSAGE.replace(b";rport", b""))
    assert plain is not None and plain.reply_port(40000) == 5070
    default = peek(MESSAGE.replace(b"10.0.0.1:5070;branch=z9hG4bKa;rport", b"10.0.0.1;branch=a"))
    assert default is not None and default.reply_port(40000) == 5060


@pytest.mark.parametrize(
    "data",
    [
        MESSAGE.replace(b"CSeq: 7 MESSAGE\r\n", b""),  # a line missing
        MESSAGE.replace(b"To: <sip:bob@example.net>\r\n", b"To: <sip:bob@x>\r\nt: <sip:b@y>\r\n"),
        MESSAGE.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n  folded\r\n"),
        MESSAGE.replace(b"Via: SIP", b"Via SIP"),  # no colon
        MESSAGE.replace(b" SIP/2.0\r\n", b" HTTP/1.1\r\n", 1),
        MESSAGE.replace(b"\r\n\r\n", b"\r\n"),  # no end of the head
        b"",
    ],
    ids=["missing", "repeated", "folded", "no-colon", "version", "no-end", "empty"],
)
def test_anything_unusual_takes_the_full_path(data: bytes) -> None:
    assert peek(data) is None
