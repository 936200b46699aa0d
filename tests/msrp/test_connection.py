"""Sans-I/O tests of gw.msrp.connection: §7.1 matching, binding, demux, end to end."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gw.msrp.connection import (
    AlternateConnection,
    MsrpConnection,
    SessionBound,
    SessionMoved,
    SessionTable,
)
from gw.msrp.events import (
    IncomingAborted,
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    RequestRejected,
    SessionClosed,
    UnmatchedResponse,
)
from gw.msrp.frame import Frame, FrameParser, FrameReceived, serialize
from gw.msrp.session import MsrpSession
from gw.msrp.uri import parse_msrp_uri

A = parse_msrp_uri("msrp://a.example:2855/sessA;tcp")
B = parse_msrp_uri("msrp://b.example:2856/sessB;tcp")
RELAY = parse_msrp_uri("msrp://relay.example:2855/r1;tcp")


def frames_in(data: bytes) -> list[Frame]:
    events = FrameParser().feed(data)
    assert all(isinstance(e, FrameReceived) for e in events)
    return [e.frame for e in events if isinstance(e, FrameReceived)]


def request(
    to: str = str(B),
    frm: str = str(A),
    method: str = "SEND",
    mid: str = "msg1",
    body: bytes = b"hi",
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    hdrs = [("To-Path", to), ("From-Path", frm), ("Message-ID", mid), *(headers or [])]
    frame = Frame("tid1234", method, headers=hdrs, body=body)
    if body:
        frame.headers.append(("Content-Type", "text/plain"))
    return serialize(frame)


def passive(**kw: object) -> tuple[MsrpSession, MsrpConnection]:
    table = SessionTable()
    s = MsrpSession(B, [A], **kw)  # type: ignore[arg-type]
    table.add(s)
    return s, MsrpConnection(table, now=0.0, idle_timeout=30.0)


class Pair:
    """Two sessions on two connection cores wired back to back (A opened the connection)."""

    def __init__(self, **kw: object) -> None:
        self.a = MsrpSession(A, [B], **kw)  # type: ignore[arg-type]
        self.b = MsrpSession(B, [A], **kw)  # type: ignore[arg-type]
        self.ta, self.tb = SessionTable(), SessionTable()
        self.ta.add(self.a)
        self.tb.add(self.b)
        self.ca = MsrpConnection(self.ta, now=0.0, outbound=True)
        self.cb = MsrpConnection(self.tb, now=0.0)
        self.empty = self.ca.attach(self.a, 0.0)

    def pump(self, now: float = 0.0, piece: int | None = None) -> int:
        """Move bytes both ways until quiet; `piece` splits them into small reads."""
        moved = 0
        while True:
            ab, ba = self.ca.data_to_send(now), self.cb.data_to_send(now)
            if not ab and not ba:
                return moved
            for data, dst in ((ab, self.cb), (ba, self.ca)):
                step = piece or max(1, len(data))
                for i in range(0, len(data), step):
                    dst.receive_data(data[i : i + step], now)
            moved += len(ab) + len(ba)


def test_opener_binds_with_empty_send_and_gets_200() -> None:
    p = Pair()
    p.pump()
    assert p.b.connection is p.cb
    assert [type(e) for e in p.cb.events()] == [SessionBound]
    assert p.empty is not None and p.empty.outcome == MessageDelivered(p.empty.message_id, True)
    assert p.b.events() == []  # the empty SEND is not a message


def test_message_end_to_end_in_small_reads() -> None:
    p = Pair(chunk_size=1000)
    body = random.Random(5).randbytes(20_000)
    msg = p.a.send_message(body, "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.pump(piece=97)
    assert [e for e in p.b.events() if isinstance(e, MessageReceived)] == [
        MessageReceived(msg.message_id, "text/plain", body, False, "yes")
    ]
    assert MessageDelivered(msg.message_id, True) in p.a.events()


def test_both_directions_and_success_report_over_the_wire() -> None:
    p = Pair()
    p.pump()
    p.cb.events()
    msg = p.b.send_message(b"pong", "text/plain", success_report=True, now=0.0)
    p.cb.wake(p.b)
    p.pump()
    (received,) = [e for e in p.a.events() if isinstance(e, MessageReceived)]
    assert received.body == b"pong" and received.success_report
    assert msg.outcome is None
    assert p.a.report_success(msg.message_id)
    p.ca.wake(p.a)
    p.pump()
    assert msg.outcome == MessageDelivered(msg.message_id, True)
    assert p.ca.events() == [] and p.cb.events() == []  # the REPORT got no response


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(0, 5000),
    chunk=st.integers(1, 700),
    piece=st.integers(5, 400),
    seed=st.integers(0, 2**16),
)
def test_any_body_any_chunking_any_reads(size: int, chunk: int, piece: int, seed: int) -> None:
    p = Pair(chunk_size=chunk)
    rnd = random.Random(seed)
    body = bytes(rnd.choice(b"-\r\n$#+ab") for _ in range(size))  # end-line look-alikes
    msg = p.a.send_message(body, "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.pump(piece=piece)
    got = [e for e in p.b.events() if isinstance(e, MessageReceived)]
    assert [e.body for e in got] == [body]
    assert msg.outcome == MessageDelivered(msg.message_id, True)


def test_unknown_session_gets_481() -> None:
    s, conn = passive()
    conn.receive_data(request(to="msrp://b.example:2856/other;tcp"), 0.0)
    (resp,) = frames_in(conn.data_to_send(0.0))
    assert (resp.tid, resp.status) == ("tid1234", 481)
    assert resp.header("To-Path") == str(A)
    assert conn.events() == [RequestRejected(481, "no such session", "SEND", "msg1", True)]
    assert s.connection is None


def test_session_id_on_another_authority_gets_481() -> None:
    _, conn = passive()
    conn.receive_data(request(to="msrp://b.example:9999/sessB;tcp"), 0.0)
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [481]


def test_from_path_mismatch_gets_481() -> None:
    s, conn = passive()
    conn.receive_data(request(frm="msrp://evil.example:2855/sessA;tcp"), 0.0)
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [481]
    (event,) = conn.events()
    assert isinstance(event, RequestRejected) and "From-Path" in event.reason
    assert s.connection is None and s.events() == []


def test_from_path_is_matched_on_its_whole_path() -> None:
    """§7.3: a relay the session never negotiated makes the path another one."""
    s, conn = passive()
    conn.receive_data(request(frm=f"{RELAY} {A}"), 0.0)
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [481]
    assert s.connection is None


def test_from_path_through_negotiated_relays_matches() -> None:
    table = SessionTable()
    s = MsrpSession(B, [RELAY, A])
    table.add(s)
    conn = MsrpConnection(table, now=0.0)
    conn.receive_data(request(frm=f"{RELAY} {A}"), 0.0)
    (resp,) = frames_in(conn.data_to_send(0.0))
    assert resp.status == 200 and resp.header("To-Path") == str(RELAY)
    assert s.connection is conn


def test_from_path_matches_uri_by_uri_per_section_6_1() -> None:
    """Host and scheme case, transport case: equal by §6.1, not by text."""
    table = SessionTable()
    s = MsrpSession(B, [RELAY, A])
    table.add(s)
    conn = MsrpConnection(table, now=0.0)
    conn.receive_data(
        request(frm="MSRP://Relay.Example:2855/r1;TCP msrp://A.EXAMPLE:2855/sessA;tcp"), 0.0
    )
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [200]


def test_from_path_with_the_relays_in_another_order_gets_481() -> None:
    table = SessionTable()
    other = parse_msrp_uri("msrp://relay2.example:2855/r2;tcp")
    s = MsrpSession(B, [RELAY, other, A])
    table.add(s)
    conn = MsrpConnection(table, now=0.0)
    conn.receive_data(request(frm=f"{other} {RELAY} {A}"), 0.0)
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [481]


def test_report_to_unknown_session_is_never_answered() -> None:
    _, conn = passive()
    report = request(
        to="msrp://b.example:2856/other;tcp",
        method="REPORT",
        body=b"",
        headers=[("Status", "000 200 OK")],
    )
    conn.receive_data(report, 0.0)
    assert conn.data_to_send(0.0) == b""
    (event,) = conn.events()
    assert isinstance(event, RequestRejected) and event.code == 481 and not event.answered


def test_failure_report_no_gets_no_481() -> None:
    _, conn = passive()
    conn.receive_data(request(to=str(A), headers=[("Failure-Report", "no")]), 0.0)
    assert conn.data_to_send(0.0) == b""


def test_second_connection_with_matching_path_is_accepted_and_answered_there() -> None:
    """OpenSIPS's msrp_ua: the bind SEND on one connection, the message on another."""
    s, conn = passive()
    other = MsrpConnection(conn.table, now=0.0)
    conn.receive_data(request(body=b"", headers=[("Byte-Range", "1-0/0")]), 0.0)
    assert s.connection is conn
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == [200]
    other.receive_data(request(mid="msg2", body=b"hello"), 0.0)
    (resp,) = frames_in(other.data_to_send(0.0))
    assert (resp.status, resp.tid) == (200, "tid1234")
    assert conn.data_to_send(0.0) == b"", "the answer goes on the connection the SEND came on"
    assert [type(e) for e in other.events()] == [AlternateConnection]
    assert other.touched() == [s]
    (received,) = s.events()
    assert isinstance(received, MessageReceived) and received.body == b"hello"
    assert s.connection is conn, "our own requests keep using the bound connection"


def test_second_connection_failure_report_no_is_delivered_silently() -> None:
    s, conn = passive()
    other = MsrpConnection(conn.table, now=0.0)
    conn.receive_data(request(body=b"", headers=[("Failure-Report", "no")]), 0.0)
    other.receive_data(request(mid="m2", body=b"text", headers=[("Failure-Report", "no")]), 0.0)
    assert other.data_to_send(0.0) == b""
    assert [e.body for e in s.events() if isinstance(e, MessageReceived)] == [b"text"]


def test_alternate_event_once_per_session_and_connection() -> None:
    _, conn = passive()
    other = MsrpConnection(conn.table, now=0.0)
    conn.receive_data(request(), 0.0)
    for i in range(3):
        other.receive_data(request(mid=f"m{i}"), 0.0)
    assert [type(e) for e in other.events()] == [AlternateConnection]


def test_second_connection_with_foreign_from_path_gets_481() -> None:
    _, conn = passive()
    other = MsrpConnection(conn.table, now=0.0)
    conn.receive_data(request(), 0.0)
    other.receive_data(request(mid="m2", frm="msrp://evil.example:2855/sessA;tcp"), 0.0)
    assert [f.status for f in frames_in(other.data_to_send(0.0))] == [481]
    assert other.events()[0] == RequestRejected(
        481, "From-Path does not match the session's peer path", "SEND", "m2", True
    )


def test_session_moves_to_the_alternate_when_its_connection_is_lost() -> None:
    s, conn = passive()
    other = MsrpConnection(conn.table, now=0.0)
    conn.receive_data(request(), 0.0)
    conn.data_to_send(0.0)
    other.receive_data(request(mid="m2"), 0.0)
    other.data_to_send(0.0)
    other.events()
    assert conn.connection_lost("peer closed") == [other]
    assert not s.closed and s.connection is other
    assert [type(e) for e in other.events()] == [SessionMoved]
    s.send_message(b"back", "text/plain", now=1.0)
    other.wake(s)
    (sent,) = frames_in(other.data_to_send(1.0))
    assert sent.method == "SEND" and sent.body == b"back"


def test_session_without_alternate_ends_when_its_connection_is_lost() -> None:
    s, conn = passive()
    conn.receive_data(request(), 0.0)
    assert conn.connection_lost("peer closed") == []
    assert s.closed


def test_alternate_stays_open_while_its_session_lives_then_idles_out() -> None:
    s, conn = passive()
    other = MsrpConnection(conn.table, now=0.0, idle_timeout=30.0)
    conn.receive_data(request(), 0.0)
    other.receive_data(request(mid="m2"), 10.0)
    deadline = other.next_deadline()
    assert deadline == 40.0
    other.on_timer(40.0)
    assert not other.closed, "its session is alive: not idle"
    s.close("bye")
    deadline = other.next_deadline()
    assert deadline is not None
    other.on_timer(deadline)
    assert other.closed


def test_parser_errors_are_answered_unless_report() -> None:
    _, conn = passive(max_chunk_size=1 << 20)
    bad = (
        b"MSRP t1x2 SEND\r\nTo-Path: "
        + str(B).encode()
        + b"\r\nFrom-Path: nonsense\r\n-------t1x2$\r\n"
    )
    conn.receive_data(bad, 0.0)
    assert [f.status for f in frames_in(conn.data_to_send(0.0))] == []  # no usable From-Path
    conn2 = MsrpConnection(conn.table, now=0.0, max_chunk_size=10)
    conn2.receive_data(request(body=b"x" * 11), 0.0)
    assert [f.status for f in frames_in(conn2.data_to_send(0.0))] == [413]
    report = request(method="REPORT", body=b"x" * 11)
    conn2.receive_data(report, 0.0)
    assert conn2.data_to_send(0.0) == b""
    assert [e.code for e in conn2.events() if isinstance(e, RequestRejected)] == [413, 413]


def test_garbage_closes_the_connection() -> None:
    _, conn = passive()
    conn.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert conn.closed and conn.close_reason == "framing lost"


def test_idle_connection_without_valid_request_is_closed() -> None:
    _, conn = passive()
    conn.receive_data(request(to="msrp://b.example:2856/other;tcp"), 1.0)
    assert conn.next_deadline() == 30.0
    conn.on_timer(29.0)
    assert not conn.closed
    conn.on_timer(30.0)
    assert conn.closed


def test_binding_stops_the_idle_timer_and_detach_restarts_it() -> None:
    s, conn = passive()
    conn.receive_data(request(), 1.0)
    conn.data_to_send(1.0)
    assert conn.next_deadline() is None
    conn.detach(s, 5.0)
    assert conn.next_deadline() == 35.0


def test_responses_are_routed_by_transaction_id() -> None:
    p = Pair()
    p.pump()
    stray = serialize(
        Frame("zzzz9999", None, 200, "OK", [("To-Path", str(A)), ("From-Path", str(B))])
    )
    p.ca.receive_data(stray, 0.0)
    assert p.ca.events() == [UnmatchedResponse("zzzz9999", 200)]


def test_session_timers_run_through_the_connection() -> None:
    p = Pair(transaction_timeout=5.0)
    p.pump()
    msg = p.a.send_message(b"x", "text/plain", now=1.0)
    p.ca.wake(p.a)
    p.ca.data_to_send(1.0)  # sent, but B never answers
    assert p.ca.next_deadline() == 6.0
    p.ca.on_timer(6.0)
    assert msg.outcome == MessageFailed(msg.message_id, 408, "transaction timeout")
    assert p.a in p.ca.touched()


def test_connection_lost_fails_pending_messages() -> None:
    p = Pair()
    p.pump()
    msg = p.a.send_message(b"x", "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.ca.data_to_send(0.0)
    p.ca.connection_lost()
    events = p.a.events()
    assert MessageFailed(msg.message_id, 408, "connection lost") in events
    assert events[-1] == SessionClosed("connection lost")
    assert p.ca.closed and p.ca.sessions == []


def test_two_sessions_share_one_connection() -> None:
    p = Pair()
    a2 = MsrpSession("msrp://a.example:2855/sessA2;tcp", ["msrp://b.example:2856/sessB2;tcp"])
    b2 = MsrpSession("msrp://b.example:2856/sessB2;tcp", ["msrp://a.example:2855/sessA2;tcp"])
    p.ta.add(a2)
    p.tb.add(b2)
    p.ca.attach(a2, 0.0)
    m1 = p.a.send_message(b"one", "text/plain", now=0.0)
    m2 = a2.send_message(b"two", "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.ca.wake(a2)
    p.pump()
    assert b2.connection is p.cb and p.b.connection is p.cb
    assert [e.body for e in p.b.events() if isinstance(e, MessageReceived)] == [b"one"]
    assert [e.body for e in b2.events() if isinstance(e, MessageReceived)] == [b"two"]
    assert isinstance(m1.outcome, MessageDelivered) and isinstance(m2.outcome, MessageDelivered)


def test_abort_reaches_the_receiver() -> None:
    p = Pair(chunk_size=100)
    p.pump()
    p.cb.events()
    p.a.events()
    msg = p.a.send_message(b"x" * 1000, "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.cb.receive_data(p.ca.data_to_send(0.0, max_bytes=300), 0.0)
    assert p.a.abort(msg)
    p.ca.wake(p.a)
    p.pump()
    assert p.a.events() == [MessageAborted(msg.message_id)]
    assert p.b.events() == [IncomingAborted(msg.message_id)]
    assert p.ca.events() == [] and p.cb.events() == []  # every answer was expected


def test_413_from_receiver_stops_the_sender() -> None:
    p = Pair(chunk_size=100, max_message_size=250)
    p.pump()
    msg = p.a.send_message(b"x" * 1000, "text/plain", now=0.0)
    p.ca.wake(p.a)
    p.cb.receive_data(p.ca.data_to_send(0.0, max_bytes=700), 0.0)  # 2 chunks, total 1000
    p.ca.receive_data(p.cb.data_to_send(0.0), 0.0)  # 413 for both
    assert msg.outcome == MessageFailed(msg.message_id, 413, "message exceeds max size")
    p.pump()
    assert msg.chunks_sent == 2  # the other 8 never went out, a '#' did
    rejected = [e for e in p.b.events() if isinstance(e, RequestRejected)]
    assert [e.code for e in rejected] == [413, 413]
    assert p.ca.events() == []  # the '#' chunk's 200 was absorbed
