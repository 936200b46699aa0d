"""Stream framing by Content-Length (gw/sip/framing.py)."""

from __future__ import annotations

import pytest

from gw.sip.framing import (
    FramedError,
    FramedMessage,
    FramerEvent,
    KeepAlive,
    StreamFramer,
    stream_content_length,
)
from gw.sip.message import Limits, Request, Response, SipParseError

HEAD = (
    "MESSAGE sip:bob@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/TCP pc33.example.com;branch=z9hG4bK{n}\r\n"
    "Max-Forwards: 70\r\n"
    "To: <sip:bob@example.com>\r\n"
    "From: <sip:alice@example.com>;tag=1\r\n"
    "Call-ID: call-{n}\r\n"
    "CSeq: {n} MESSAGE\r\n"
)


def message(n: int = 1, body: bytes = b"hello", cl: str | None = None) -> bytes:
    length = str(len(body)) if cl is None else cl
    return (HEAD.format(n=n) + f"Content-Length: {length}\r\n\r\n").encode() + body


def messages(events: list[FramerEvent]) -> list[Request | Response]:
    out = []
    for event in events:
        assert isinstance(event, FramedMessage), event
        out.append(event.message)
    return out


def feed_all(chunks: list[bytes], limits: Limits | None = None) -> list[FramerEvent]:
    framer = StreamFramer(limits)
    events: list[FramerEvent] = []
    for chunk in chunks:
        events.extend(framer.feed(chunk))
    return events


def test_one_message_in_one_feed() -> None:
    (msg,) = messages(StreamFramer().feed(message()))
    assert msg.call_id == "call-1" and msg.body == b"hello"


def test_body_split_across_feeds() -> None:
    framer = StreamFramer()
    data = message(body=b"0123456789")
    head_end = data.index(b"\r\n\r\n") + 4
    assert framer.feed(data[: head_end + 3]) == []
    assert framer.feed(data[head_end + 3 : -1]) == []
    (msg,) = messages(framer.feed(data[-1:]))
    assert msg.body == b"0123456789"


def test_every_split_position_of_a_small_stream() -> None:
    stream = message(1, b"a\r\n\r\nb") + b"\r\n\r\n" + message(2, b"") + message(3, b"xyz")
    for cut in range(len(stream) + 1):
        events = feed_all([stream[:cut], stream[cut:]])
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["FramedMessage", "KeepAlive", "FramedMessage", "FramedMessage"], cut
        bodies = [e.message.body for e in events if isinstance(e, FramedMessage)]
        assert bodies == [b"a\r\n\r\nb", b"", b"xyz"]


def test_byte_by_byte() -> None:
    stream = message(1) + message(2, b"")
    events = feed_all([stream[i : i + 1] for i in range(len(stream))])
    assert [m.call_id for m in messages(events)] == ["call-1", "call-2"]


def test_two_messages_in_one_feed() -> None:
    events = StreamFramer().feed(message(1) + message(2, b"world"))
    assert [(m.call_id, m.body) for m in messages(events)] == [
        ("call-1", b"hello"),
        ("call-2", b"world"),
    ]


def test_keepalive_ping_alone_and_split() -> None:
    assert StreamFramer().feed(b"\r\n\r\n") == [KeepAlive()]
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlive()]
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r") == []
    assert framer.feed(b"\n") == [KeepAlive()]


def test_keepalives_between_and_before_messages() -> None:
    events = StreamFramer().feed(b"\r\n\r\n" + message(1) + b"\r\n\r\n\r\n\r\n" + message(2))
    assert [type(e) for e in events] == [
        KeepAlive,
        FramedMessage,
        KeepAlive,
        KeepAlive,
        FramedMessage,
    ]


def test_a_lone_crlf_before_a_message_is_skipped() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    (msg,) = messages(framer.feed(message()))
    assert msg.call_id == "call-1"


def test_content_length_anywhere_in_the_head() -> None:
    data = (
        b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
        b"content-LENGTH :\t 3 \r\n"
        + HEAD.format(n=7).split("\r\n", 1)[1].encode()
        + b"\r\nabcNEXT"
    )
    (msg,) = messages(StreamFramer().feed(data))
    assert msg.body == b"abc"


def test_compact_and_folded_content_length() -> None:
    compact = (HEAD.format(n=1) + "l: 2\r\n\r\nhi").encode()
    folded = (HEAD.format(n=2) + "Content-Length:\r\n  2\r\n\r\nho").encode()
    assert [m.body for m in messages(StreamFramer().feed(compact + folded))] == [b"hi", b"ho"]


def test_lf_only_messages() -> None:
    lf = message(1, b"x\r\n\r\ny").replace(b"\r\n", b"\n").replace(b"x\n\ny", b"x\r\n\r\ny")
    events = StreamFramer().feed(lf + message(2))
    assert [(m.call_id, m.body) for m in messages(events)] == [
        ("call-1", b"x\r\n\r\ny"),
        ("call-2", b"hello"),
    ]


def test_body_containing_blank_lines_is_not_a_head_end() -> None:
    body = b"\n\n\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    (msg,) = messages(StreamFramer().feed(message(body=body)))
    assert msg.body == body


def test_parse_error_in_a_framed_message_is_not_fatal() -> None:
    bad = message(1).replace(b"CSeq: 1 MESSAGE", b"CSeq: 1 INVITE")
    framer = StreamFramer()
    events = framer.feed(bad + message(2))
    assert isinstance(events[0], FramedError) and not events[0].fatal
    assert events[0].error.code == 400 and isinstance(events[0].error.partial, Request)
    assert messages(events[1:])[0].call_id == "call-2"


def test_missing_content_length_is_fatal_400_with_partial() -> None:
    data = (HEAD.format(n=1) + "\r\nbody").encode()
    framer = StreamFramer()
    (event,) = framer.feed(data + message(2))
    assert isinstance(event, FramedError) and event.fatal
    assert (event.error.code, event.error.reason) == (400, "Missing Content-Length")
    assert isinstance(event.error.partial, Request) and event.error.partial.call_id == "call-1"
    assert framer.feed(message(3)) == []  # the stream is dead: close it


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("-999", "Bad Content-Length"),  # RFC 4475 ncl
        ("five", "Bad Content-Length"),
        ("", "Bad Content-Length"),
        ("1 2", "Bad Content-Length"),
        ("\u0663", "Bad Content-Length"),
        ("9" * 5000, "Bad Content-Length"),
        ("5\r\nContent-Length: 5", "Multiple Content-Length"),
        ("13\r\nl: 5", "Multiple Content-Length"),  # RFC 4475 mcl01
    ],
)
def test_unusable_content_length_is_fatal(value: str, reason: str) -> None:
    data = (HEAD.format(n=1) + f"Content-Length: {value}\r\n\r\nhello").encode("utf-8")
    (event,) = StreamFramer().feed(data)
    assert isinstance(event, FramedError) and event.fatal
    assert (event.error.code, event.error.reason) == (400, reason)


def test_endless_head_over_max_message_size_is_fatal_413() -> None:
    framer = StreamFramer(Limits(max_message_size=500))
    assert framer.feed(b"MESSAGE sip:b@h SIP/2.0\r\n") == []
    (event,) = framer.feed(b"X-Junk: " + b"y" * 600)
    assert isinstance(event, FramedError) and event.fatal
    assert (event.error.code, event.error.partial) == (413, None)


def test_content_length_over_limits_is_fatal_413_with_partial() -> None:
    for limits in (Limits(max_body_size=100), Limits(max_message_size=400)):
        framer = StreamFramer(limits)
        (event,) = framer.feed(message(1, cl="1000"))  # no need to wait for the body
        assert isinstance(event, FramedError) and event.fatal
        assert event.error.code == 413
        assert isinstance(event.error.partial, Request)
        assert event.error.partial.call_id == "call-1"


def test_limits_are_inclusive() -> None:
    data = message(1, b"x" * 100)
    (msg,) = messages(
        StreamFramer(Limits(max_message_size=len(data), max_body_size=100)).feed(data)
    )
    assert len(msg.body) == 100


def test_responses_are_framed_too() -> None:
    data = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nTo: <sip:b@h>;tag=2\r\n"
        b"From: <sip:a@h>;tag=1\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
    (msg,) = messages(StreamFramer().feed(data * 2)[:1])
    assert isinstance(msg, Response) and msg.status == 200


def test_stream_content_length() -> None:
    assert stream_content_length(b"X sip:a SIP/2.0\r\nContent-Length: 12") == 12
    assert stream_content_length(b"X sip:a SIP/2.0\nA: b\nL:\n 0007\nC: d") == 7
    with pytest.raises(SipParseError):
        stream_content_length(b"Content-Length: 5")  # a start line, not a header
    with pytest.raises(SipParseError):
        stream_content_length(b"X sip:a SIP/2.0\r\nX-Content-Length: 5")
