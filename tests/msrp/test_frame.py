"""MSRP frame model, serializer, responses and parser (RFC 4975 §7, §9, §10)."""

from __future__ import annotations

import pytest

from gw.msrp.frame import (
    Event,
    Frame,
    FrameError,
    FrameParser,
    FrameReceived,
    make_response,
    parse_byte_range,
    serialize,
)
from gw.msrp.uri import parse_msrp_uri, parse_path

CRLF = b"\r\n"
ALICE = "msrp://atlanta.example.com:7654/jshA7weztas;tcp"
BOB = "msrp://biloxi.example.com:12763/kjhd37s2s20w2a;tcp"


def wire(*lines: str | bytes) -> bytes:
    return b"".join((x.encode() if isinstance(x, str) else x) + CRLF for x in lines)


def parse_all(data: bytes, **limits: int) -> list[Event]:
    """One-shot and byte-at-a-time parses must agree; return the events."""
    whole = FrameParser(**limits).feed(data)
    parser = FrameParser(**limits)
    trickle = [e for i in range(len(data)) for e in parser.feed(data[i : i + 1])]
    assert trickle == whole
    return whole


def only_frame(data: bytes, **limits: int) -> Frame:
    events = parse_all(data, **limits)
    assert len(events) == 1 and isinstance(events[0], FrameReceived), events
    return events[0].frame


def send(tid: str = "a786hjs2", body: bytes = b"Hey Bob, are you there?", flag: str = "$") -> bytes:
    return wire(
        f"MSRP {tid} SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "Message-ID: 87652491",
        f"Byte-Range: 1-{len(body)}/{len(body)}",
        "Content-Type: text/plain",
        "",
        body,
        f"-------{tid}{flag}",
    )


RFC_SEND = send()


def test_rfc_send_example() -> None:
    frame = only_frame(RFC_SEND)
    assert frame.tid == "a786hjs2" and frame.method == "SEND" and frame.status is None
    assert frame.body == b"Hey Bob, are you there?" and frame.flag == "$"
    assert frame.to_path == (parse_msrp_uri(BOB),)
    assert frame.from_path == (parse_msrp_uri(ALICE),)
    assert frame.message_id == "87652491"
    assert frame.byte_range == (1, 23, 23)
    assert frame.content_type == "text/plain"
    assert serialize(frame) == RFC_SEND


def test_rfc_response_example_and_make_response() -> None:
    expected = wire(
        "MSRP a786hjs2 200 OK", f"To-Path: {ALICE}", f"From-Path: {BOB}", "-------a786hjs2$"
    )
    response = make_response(only_frame(RFC_SEND), 200)
    assert serialize(response) == expected
    parsed = only_frame(expected)
    assert parsed == response
    assert parsed.method is None and parsed.status == 200 and parsed.comment == "OK"


def test_make_response_is_hop_by_hop() -> None:
    request = Frame.request(
        "SEND",
        parse_path("msrp://relay.example:1/r;tcp msrp://bob.example:2/b;tcp"),
        parse_path("msrp://relay0.example:3/q;tcp msrp://alice.example:4/a;tcp"),
        tid="t1234",
    )
    response = make_response(request, 481, "No such session")
    assert response.header("To-Path") == "msrp://relay0.example:3/q;tcp"
    assert response.header("From-Path") == "msrp://relay.example:1/r;tcp"
    assert response.comment == "No such session" and response.tid == "t1234"
    me = parse_msrp_uri("msrp://gw.example:5/me;tcp")
    assert make_response(request, 200, responder=me).from_path == (me,)
    assert make_response(request, 299).comment is None
    assert b"MSRP t1234 299\r\n" in serialize(make_response(request, 299))


def test_make_response_refuses_reports_and_responses() -> None:
    report = Frame.request("REPORT", parse_path(BOB), parse_path(ALICE))
    with pytest.raises(ValueError, match="REPORT"):
        make_response(report, 200)
    with pytest.raises(ValueError):
        make_response(make_response(only_frame(RFC_SEND), 200), 200)
    with pytest.raises(ValueError):
        make_response(Frame("abcd", "SEND"), 200)


def test_chunked_send_with_unknown_length() -> None:
    data = wire(
        "MSRP dkei38sd SEND",
        "To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
        "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
        "Message-ID: 12339sdqwer",
        "Byte-Range: 1-*/*",
        "Content-Type: text/plain",
        "",
        "Hi Alice, I'm reading your message.",
        "-------dkei38sd+",
    )
    frame = only_frame(data)
    assert frame.flag == "+" and frame.byte_range == (1, None, None)
    assert serialize(frame) == data


@pytest.mark.parametrize("flag", ["+", "$", "#"])
def test_flags(flag: str) -> None:
    frame = only_frame(send(flag=flag))
    assert frame.flag == flag
    assert serialize(frame) == send(flag=flag)


def test_rfc_report_example() -> None:
    data = wire(
        "MSRP dkei38sd REPORT",
        "To-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp",
        "From-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp",
        "Message-ID: 12339sdqwer",
        "Byte-Range: 1-106/106",
        "Status: 000 200 OK",
        "-------dkei38sd$",
    )
    frame = only_frame(data)
    assert frame.method == "REPORT" and frame.body == b""
    assert frame.header("status") == "000 200 OK"
    assert serialize(frame) == data
    with pytest.raises(ValueError):
        make_response(frame, 200)


def test_rfc4976_auth_and_401_with_extra_headers() -> None:
    auth = wire(
        "MSRP 49fh AUTH",
        "To-Path: msrps://alice@intra.example.com;tcp",
        "From-Path: msrps://alice.example.com:9892/98cjs;tcp",
        "-------49fh$",
    )
    frame = only_frame(auth)
    assert frame.method == "AUTH" and frame.to_path[0].user == "alice"
    assert frame.to_path[0].port is None and frame.to_path[0].session_id is None
    challenge = wire(
        "MSRP 49fh 401 Unauthorized",
        "To-Path: msrps://alice.example.com:9892/98cjs;tcp",
        "From-Path: msrps://alice@intra.example.com;tcp",
        'WWW-Authenticate: Digest realm="intra.example.com", qop="auth", nonce="dcd98b7102dd"',
        "-------49fh$",
    )
    response = only_frame(challenge)
    assert response.status == 401 and response.comment == "Unauthorized"
    assert response.header(
        "www-authenticate",
    ).startswith("Digest")  # type: ignore[union-attr]
    assert serialize(response) == challenge
    generated = make_response(frame, 401, "Unauthorized")
    generated.headers.append(response.headers[-1])
    assert serialize(generated) == challenge


def test_unknown_method_and_headers_are_kept() -> None:
    data = wire(
        "MSRP x9f8s7 NICKNAME",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        'Use-Nickname: "Alice"',
        "Content-Disposition: render",
        "Content-ID: <part1@example.com>",
        "x-custom-Header:  spaced value\t",
        "Content-Type: text/plain",
        "",
        "hi",
        "-------x9f8s7$",
    )
    frame = only_frame(data)
    assert frame.method == "NICKNAME"
    assert [k for k, _ in frame.headers] == [
        "To-Path",
        "From-Path",
        "Use-Nickname",
        "Content-Disposition",
        "Content-ID",
        "x-custom-Header",
        "Content-Type",
    ]
    assert frame.header("X-CUSTOM-HEADER") == "spaced value"
    assert frame.header("content-id") == "<part1@example.com>"
    assert frame.header("Absent") is None and frame.byte_range is None


def test_header_without_space_after_colon() -> None:
    data = wire(
        "MSRP abcd SEND", f"To-Path:{BOB}", f"From-Path: {ALICE}", "Message-ID:m1", "-------abcd$"
    )
    frame = only_frame(data)
    assert frame.message_id == "m1" and frame.to_path[0].port == 12763


def test_empty_send_has_no_body_section() -> None:
    frame = Frame.request(
        "SEND", parse_path(BOB), parse_path(ALICE), tid="e1e1e1", headers=[("Message-ID", "m")]
    )
    data = serialize(frame)
    assert data == wire(
        "MSRP e1e1e1 SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "Message-ID: m",
        "-------e1e1e1$",
    )
    assert only_frame(data) == frame


def test_empty_body_with_content_type_round_trips() -> None:
    data = wire(
        "MSRP e2e2e2 SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "Content-Type: text/plain",
        "",
        "",
        "-------e2e2e2$",
    )
    frame = only_frame(data)
    assert frame.body == b"" and frame.content_type == "text/plain"
    assert serialize(frame) == data


def test_missing_data_crlf_is_tolerated() -> None:
    data = wire(
        "MSRP e3e3e3 SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "Content-Type: text/plain",
        "",
        "-------e3e3e3$",
    )
    assert only_frame(data).body == b""


TRICKY_BODY = b"\r\n".join(
    [
        b"-------",
        b"-------a786hjs2",  # our tid, no flag
        b"-------a786hjs2!",  # our tid, not a flag
        b"-------a786hjs2$ trailing",  # flag not followed by CRLF
        b"-------a786hjs2$",  # ... and not preceded by CRLF? it is: last line below
        b"-------otherTid$",  # another frame's end-line
        b"-------a786hjs",  # prefix of our tid
        b"x-------a786hjs2$",
        b"MSRP a786hjs2 200 OK",
        b"",
        b"-------a786hjs2+x",
    ]
)


def test_body_lines_that_look_like_end_lines_are_data() -> None:
    body = TRICKY_BODY.replace(b"\r\n-------a786hjs2$\r\n", b"\r\n-------a786hjs2$\t\r\n")
    frame = only_frame(send(body=body))
    assert frame.body == body
    assert serialize(frame) == send(body=body)


def test_serialize_refuses_body_containing_end_line() -> None:
    frame = Frame.request(
        "SEND",
        parse_path(BOB),
        parse_path(ALICE),
        tid="abcd",
        body=b"x\r\n-------abcd$\r\ny",
        content_type="text/plain",
    )
    with pytest.raises(ValueError, match="end-line"):
        serialize(frame)
    frame.body = b"-------abcd#\r\n"  # would end the body at its very start
    with pytest.raises(ValueError):
        serialize(frame)
    frame.body = b"x\r\n-------abcd$"  # the CRLF before the real end-line completes it
    with pytest.raises(ValueError):
        serialize(frame)
    frame.body = b"x\r\n-------abcd"  # no flag: plain data
    assert only_frame(serialize(frame)).body == frame.body


@pytest.mark.parametrize(
    "frame",
    [
        Frame("ab cd", "SEND"),
        Frame("abcd", "send"),
        Frame("abcd", "SEND", status=200),
        Frame("abcd", None),
        Frame("abcd", None, 1000),
        Frame("abcd", None, 200, "bad\r\ncomment"),
        Frame("abcd", "SEND", flag="!"),
        Frame("abcd", "SEND", flag=""),
        Frame("abcd", "SEND", headers=[("X", "a\r\nInjected: yes")]),
        Frame("abcd", "SEND", headers=[("Bad Name", "v")]),
    ],
)
def test_serialize_validates(frame: Frame) -> None:
    with pytest.raises(ValueError):
        serialize(frame)


def test_request_constructor() -> None:
    frame = Frame.request(
        "SEND",
        parse_path(BOB),
        parse_path(ALICE),
        body=b"hi",
        content_type="text/plain",
        headers=[("Message-ID", "m")],
    )
    assert [k for k, _ in frame.headers] == ["To-Path", "From-Path", "Message-ID", "Content-Type"]
    assert 8 <= len(frame.tid) <= 32
    with pytest.raises(ValueError):
        Frame.request("SEND", parse_path(BOB), parse_path(ALICE), body=b"hi")


def test_serialize_orders_headers() -> None:
    frame = Frame(
        "abcd",
        "SEND",
        headers=[
            ("Content-Type", "text/plain"),
            ("Message-ID", "m"),
            ("From-Path", ALICE),
            ("To-Path", BOB),
        ],
        body=b"x",
    )
    assert serialize(frame) == wire(
        "MSRP abcd SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "Message-ID: m",
        "Content-Type: text/plain",
        "",
        "x",
        "-------abcd$",
    )


def test_path_cache_follows_header_changes() -> None:
    frame = only_frame(RFC_SEND)
    assert frame.to_path[0].host == "biloxi.example.com"
    frame.headers[0] = ("To-Path", "msrp://other.example:1/s;tcp")
    assert frame.to_path[0].host == "other.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1-25/25", (1, 25, 25)),
        ("1-*/*", (1, None, None)),
        ("26-50/*", (26, 50, None)),
        ("1-0/0", (1, 0, 0)),
    ],
)
def test_byte_range(value: str, expected: tuple[int, int | None, int | None]) -> None:
    assert parse_byte_range(value) == expected


@pytest.mark.parametrize(
    "value", ["", "1-2", "0-5/5", "5-2/9", "1-10/5", "a-b/c", "1 - 2/3", "1-2/" + "9" * 30]
)
def test_byte_range_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_byte_range(value)


# --- errors -----------------------------------------------------------------

NEXT = send(tid="nextOne1", body=b"still alive")


def assert_recovers(bad: bytes, code: int, reason: str, **limits: int) -> FrameError:
    """`bad` yields one non-fatal error and the following frame still parses."""
    events = parse_all(bad + NEXT, **limits)
    assert len(events) == 2, events
    error, ok = events
    assert isinstance(error, FrameError) and not error.fatal
    assert (error.code, error.reason) == (code, reason)
    assert isinstance(ok, FrameReceived) and ok.frame.body == b"still alive"
    return error


def test_413_on_oversized_chunk_then_next_frame() -> None:
    body = b"-------a786hjs2\r\n" * 200
    error = assert_recovers(send(body=body), 413, "chunk too large", max_chunk_size=1000)
    assert error.tid == "a786hjs2" and error.request is not None
    assert error.request.method == "SEND" and error.request.body == b""
    assert error.request.message_id == "87652491"
    assert make_response(error.request, 413).header("To-Path") == ALICE


def test_chunk_size_limit_is_inclusive() -> None:
    assert only_frame(send(body=b"x" * 100), max_chunk_size=100).body == b"x" * 100
    events = parse_all(send(body=b"x" * 101), max_chunk_size=100)
    assert [type(e) for e in events] == [FrameError]


def test_oversized_chunk_memory_stays_bounded() -> None:
    parser = FrameParser(max_chunk_size=64 * 1024)
    data = send(body=b"z" * (3 << 20))
    events: list[Event] = []
    peak = 0
    for i in range(0, len(data), 4096):
        events += parser.feed(data[i : i + 4096])
        peak = max(peak, parser.buffered)
    events += parser.feed(NEXT)
    assert [type(e) for e in events] == [FrameError, FrameReceived]
    assert peak <= 64 * 1024 + 16 * 1024 + 256
    assert parser.buffered == 0


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([f"From-Path: {ALICE}"], "missing To-Path"),
        ([f"To-Path: {BOB}"], "missing From-Path"),
        (["To-Path: msrp://nope", f"From-Path: {ALICE}"], "malformed To-Path"),
        ([f"To-Path: {BOB}", "From-Path: "], "malformed From-Path"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", "Byte-Range: 5-1/9"], "malformed Byte-Range"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", "no colon here"], "malformed header"),
        ([f"To-Path: {BOB}", "Bad Name: x", f"From-Path: {ALICE}"], "malformed header"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", " folded: continuation"], "malformed header"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", "X-Ctl: a\x00b"], "malformed header"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", b"X-Utf: \xff\xfe"], "malformed header"),
        ([f"To-Path: {BOB}", f"From-Path: {ALICE}", "-------badTid$"], "malformed header"),
    ],
)
@pytest.mark.parametrize("with_body", [False, True])
def test_400_keeps_connection(lines: list[str | bytes], reason: str, with_body: bool) -> None:
    tail = (
        ["Content-Type: text/plain", "", "-------q1w2e3$ body", "-------q1w2e3$"]
        if with_body
        else ["-------q1w2e3$"]
    )
    error = assert_recovers(wire("MSRP q1w2e3 SEND", *lines, *tail), 400, reason)
    assert error.tid == "q1w2e3" and error.request is not None
    assert error.request.method == "SEND" and error.request.body == b""


def test_400_request_carries_paths_despite_bad_header() -> None:
    error = assert_recovers(
        wire(
            "MSRP q1w2e3 SEND", "Oops", f"To-Path: {BOB}", f"From-Path: {ALICE}", "-------q1w2e3$"
        ),
        400,
        "malformed header",
    )
    assert error.request is not None
    assert make_response(error.request, 400).header("To-Path") == ALICE


@pytest.mark.parametrize(
    "start",
    [
        "MSRP abcd send",
        "MSRP abcd",
        "MSRP abcd SEND extra",
        "MSRP abcd 20",
        "MSRP abcd 2000 OK",
        "MSRP abcd 200 bad\x01",
    ],
)
def test_bad_start_line_with_tid_is_not_fatal(start: str) -> None:
    error = assert_recovers(
        wire(start, f"To-Path: {BOB}", f"From-Path: {ALICE}", "-------abcd$"),
        400,
        "malformed start line",
    )
    assert error.tid == "abcd" and error.request is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HELLO",  # detected before any CRLF arrives
        b"\r\nMSRP abcd SEND\r\n",
        b"msrp abcd SEND\r\n",
        b"MSRP  SEND\r\n",
        b"MSRP ab/cd SEND\r\n",
        b"MSRP " + b"a" * 65 + b" SEND\r\n",
    ],
)
def test_fatal_garbage(data: bytes) -> None:
    events = parse_all(data)
    assert events == [FrameError(None, 400, "malformed start line", None, True)]
    parser = FrameParser()
    parser.feed(data)
    assert parser.closed and parser.buffered == 0
    assert parser.feed(NEXT) == []


def test_fatal_after_good_frame() -> None:
    events = parse_all(RFC_SEND + b"garbage\r\n" + NEXT)
    assert isinstance(events[0], FrameReceived)
    assert events[1:] == [FrameError(None, 400, "malformed start line", None, True)]


def test_header_bytes_limit_gives_413() -> None:
    bad = wire(
        "MSRP big1 SEND",
        f"To-Path: {BOB}",
        f"From-Path: {ALICE}",
        "X-Big: " + "v" * 600,
        "Content-Type: text/plain",
        "",
        "body",
        "-------big1$",
    )
    error = assert_recovers(bad, 413, "headers too large", max_header_bytes=512)
    assert error.request is not None and error.request.to_path[0].port == 12763


def test_header_limit_on_end_line_of_bodyless_frame() -> None:
    lines = ["MSRP big2 SEND", f"To-Path: {BOB}", f"From-Path: {ALICE}", "X-Pad: " + "p" * 300]
    size = len(wire(*lines))
    bad = wire(*lines, "-------big2$")
    assert_recovers(bad, 413, "headers too large", max_header_bytes=size + 5)
    assert only_frame(bad, max_header_bytes=size + 14).header("X-Pad")


def test_overlong_start_line() -> None:
    assert_recovers(
        wire("MSRP long1 " + "A" * 400, "-------long1$"),
        413,
        "headers too large",
        max_header_bytes=256,
    )
    events = parse_all(b"X" * 300, max_header_bytes=256)
    assert events == [FrameError(None, 400, "malformed start line", None, True)]
    events = parse_all(b"MSRP " + b"a" * 300, max_header_bytes=256)
    assert [e.fatal for e in events if isinstance(e, FrameError)] == [True]


def test_too_many_headers_gives_400() -> None:
    extra = [f"X-H{i}: {i}" for i in range(5)]
    bad = wire("MSRP many1 SEND", f"To-Path: {BOB}", f"From-Path: {ALICE}", *extra, "-------many1$")
    error = assert_recovers(bad, 400, "too many headers", max_headers=6)
    assert error.request is not None and len(error.request.headers) == 6
    assert only_frame(bad, max_headers=7).header("X-H4") == "4"


def test_response_missing_paths_is_reported() -> None:
    error = assert_recovers(wire("MSRP r1r1 200 OK", "-------r1r1$"), 400, "missing To-Path")
    assert error.request is not None and error.request.method is None


def test_response_comment_forms() -> None:
    base = [f"To-Path: {ALICE}", f"From-Path: {BOB}", "-------r2r2$"]
    assert only_frame(wire("MSRP r2r2 200", *base)).comment is None
    assert only_frame(wire("MSRP r2r2 200 ", *base)).comment == ""
    assert (
        only_frame(wire("MSRP r2r2 481 Session \u00e9 gone", *base)).comment
        == "Session \u00e9 gone"
    )


def test_parser_rejects_silly_limits() -> None:
    with pytest.raises(ValueError):
        FrameParser(max_header_bytes=10)
