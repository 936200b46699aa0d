"""Sans-I/O tests of gw.msrp.session: sending, receiving, responses and REPORTs."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import pytest

from gw.mime import mime_matches as media_type_accepted
from gw.msrp.events import (
    IncomingAborted,
    IncomingExpired,
    MessageAborted,
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    ReportIgnored,
    RequestRejected,
    SessionClosed,
    SessionEvent,
)
from gw.msrp.frame import Frame, make_response
from gw.msrp.report import format_status, parse_status
from gw.msrp.session import MsrpSession, to_path
from gw.msrp.uri import parse_msrp_uri

A = parse_msrp_uri("msrp://a.example:2855/sessA;tcp")
B = parse_msrp_uri("msrp://b.example:2856/sessB;tcp")
RELAY = parse_msrp_uri("msrps://relay.example:2855/r1;tcp")
T = TypeVar("T")


def session(local: str = str(B), peer: Sequence[str] = (str(A),), **kw: object) -> MsrpSession:
    return MsrpSession(local, list(peer), **kw)  # type: ignore[arg-type]


def send_frame(
    body: bytes = b"hello",
    *,
    mid: str = "msg1",
    byte_range: str | None = None,
    flag: str = "$",
    content_type: str | None = "text/plain",
    headers: Sequence[tuple[str, str]] = (),
    tid: str | None = None,
    method: str = "SEND",
) -> Frame:
    hdrs = [("Message-ID", mid), *headers]
    if byte_range is not None:
        hdrs.append(("Byte-Range", byte_range))
    if content_type is None and body:  # not RFC 4975 grammar, but seen: accept it
        frame = Frame.request(method, [B], [A], tid=tid, headers=hdrs, flag=flag)
        frame.body = body
        return frame
    return Frame.request(
        method, [B], [A], tid=tid, headers=hdrs, body=body, content_type=content_type, flag=flag
    )


def report_frame(mid: str, status: str, byte_range: str | None = None) -> Frame:
    hdrs = [("Message-ID", mid), ("Status", status)]
    if byte_range is not None:
        hdrs.append(("Byte-Range", byte_range))
    return Frame.request("REPORT", [B], [A], headers=hdrs)


def responses(frames: list[Frame]) -> list[int | None]:
    return [f.status for f in frames if f.method is None]


def of_type(events: list[SessionEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


def answer_all(s: MsrpSession, frames: list[Frame], code: int = 200, now: float = 0.0) -> None:
    for f in frames:
        if f.method == "SEND":
            s.handle_response(make_response(f, code), now)


# --- helpers ----------------------------------------------------------------------------


def test_media_type_matching() -> None:
    assert media_type_accepted("text/plain; charset=UTF-8", ["TEXT/PLAIN"])
    assert media_type_accepted("text/html", ["text/*"])
    assert media_type_accepted("image/png", ["*"])
    assert not media_type_accepted("image/png", ["text/*", "message/cpim"])


def test_to_path_accepts_strings_and_uris() -> None:
    assert to_path(f"{RELAY} {A}") == (RELAY, A)
    assert to_path([str(RELAY), A]) == (RELAY, A)
    assert to_path(A) == (A,)


def test_status_header() -> None:
    assert format_status(200) == "000 200 OK"
    assert format_status(413, "too\r\nbig") == "000 413 too  big"
    st = parse_status("000 415 Unsupported Media Type")
    assert st is not None and (st.namespace, st.code, st.comment) == (
        "000",
        415,
        "Unsupported Media Type",
    )
    assert parse_status("200 OK") is None and parse_status(None) is None


def test_session_needs_a_session_id() -> None:
    with pytest.raises(ValueError):
        MsrpSession("msrp://b.example:1;tcp", [str(A)])


# --- sending ----------------------------------------------------------------------------


def test_chunked_send_has_byte_ranges_message_id_and_content_type() -> None:
    s = session(chunk_size=2048)
    body = random.Random(1).randbytes(5000)
    msg = s.send_message(body, "text/plain", now=0.0)
    frames = s.pull(0.0)
    assert [f.header("Byte-Range") for f in frames] == [
        "1-2048/5000",
        "2049-4096/5000",
        "4097-5000/5000",
    ]
    assert [f.flag for f in frames] == ["+", "+", "$"]
    assert {f.message_id for f in frames} == {msg.message_id}
    assert all(f.content_type == "text/plain" for f in frames)
    assert all(f.header("To-Path") == str(A) and f.header("From-Path") == str(B) for f in frames)
    assert all(f.header("Failure-Report") is None for f in frames)  # "yes" is the default
    assert b"".join(f.body for f in frames) == body
    assert len({f.tid for f in frames}) == 3
    answer_all(s, frames[:2])
    assert s.events() == []
    answer_all(s, frames[2:])
    assert s.events() == [MessageDelivered(msg.message_id, True)]
    assert msg.outcome == MessageDelivered(msg.message_id, True)


def test_to_path_lists_relays_first() -> None:
    s = session(peer=(str(RELAY), str(A)))
    s.send_message(b"x", "text/plain", now=0.0)
    (frame,) = s.pull(0.0)
    assert frame.header("To-Path") == f"{RELAY} {A}"


def test_pull_budget_interleaves_messages_round_robin() -> None:
    s = session(chunk_size=100)
    m1 = s.send_message(b"a" * 300, "text/plain", now=0.0)
    m2 = s.send_message(b"b" * 300, "text/plain", now=0.0)
    first = s.pull(0.0, budget=1)
    assert len(first) == 1 and s.has_outgoing()
    rest = s.pull(0.0)
    ids = [f.message_id for f in first + rest]
    assert ids == [m1.message_id, m2.message_id] * 3


def test_too_big_for_peer_max_size_fails_413_without_sending() -> None:
    s = session(peer_max_size=100)
    msg = s.send_message(b"x" * 101, "text/plain", now=0.0)
    assert s.pull(0.0) == []
    assert s.events() == [
        MessageFailed(msg.message_id, 413, "message exceeds the peer's max-size 100")
    ]
    ok = s.send_message(b"x" * 100, "text/plain", now=0.0)
    assert [f.message_id for f in s.pull(0.0)] == [ok.message_id]


def test_type_outside_peer_accept_types_fails_415_locally() -> None:
    s = session(peer_accept_types=["message/cpim"])
    msg = s.send_message(b"x", "text/plain", now=0.0)
    assert s.pull(0.0) == []
    (event,) = s.events()
    assert isinstance(event, MessageFailed) and event.code == 415
    assert msg.outcome == event


def test_caller_mistakes_raise() -> None:
    s = session()
    with pytest.raises(ValueError):
        s.send_message(b"x", "text/plain", failure_report="maybe", now=0.0)
    with pytest.raises(ValueError):
        s.send_message(b"x", "text/plain\r\nX: y", now=0.0)
    with pytest.raises(ValueError):
        s.send_message(b"x", "text/plain", message_id="no spaces", now=0.0)
    s.send_message(b"x", "text/plain", message_id="fixed1", now=0.0)
    with pytest.raises(ValueError):
        s.send_message(b"x", "text/plain", message_id="fixed1", now=0.0)


def test_empty_send() -> None:
    s = session()
    msg = s.send_empty()
    (frame,) = s.pull(0.0)
    assert frame.method == "SEND" and frame.body == b"" and frame.content_type is None
    assert frame.message_id == msg.message_id and frame.header("Byte-Range") == "1-0/0"
    s.handle_response(make_response(frame, 200), 0.0)
    assert s.events() == [MessageDelivered(msg.message_id, True)]


def test_transaction_timeout_fails_with_408() -> None:
    s = session(transaction_timeout=5.0, chunk_size=10)
    msg = s.send_message(b"x" * 25, "text/plain", now=0.0)
    frames = s.pull(1.0)
    answer_all(s, frames[:1], now=2.0)
    assert s.next_deadline() == 6.0
    s.on_timer(5.9)
    assert s.events() == []
    s.on_timer(6.0)
    assert s.events() == [MessageFailed(msg.message_id, 408, "transaction timeout")]
    assert s.next_deadline() is None
    answer_all(s, frames[1:], now=7.0)  # late 200s change nothing
    assert s.events() == []


def test_default_transaction_timeout_is_30s() -> None:
    s = session()
    s.send_message(b"x", "text/plain", now=100.0)
    s.pull(100.0)
    assert s.next_deadline() == 130.0


def test_error_response_fails_message_and_aborts_the_rest() -> None:
    s = session(chunk_size=10)
    msg = s.send_message(b"x" * 50, "text/plain", now=0.0)
    frames = s.pull(0.0, budget=1)  # only the first chunk is out
    s.handle_response(make_response(frames[0], 413), 0.0)
    assert s.events() == [MessageFailed(msg.message_id, 413, "Message Too Large")]
    (abort,) = s.pull(0.0)
    assert abort.flag == "#" and abort.body == b"" and abort.header("Byte-Range") == "11-10/50"
    assert abort.message_id == msg.message_id
    assert s.handle_response(make_response(abort, 200), 0.0)  # absorbed
    assert s.events() == [] and not s.has_outgoing()


def test_local_abort_sends_hash_chunk() -> None:
    s = session(chunk_size=10)
    msg = s.send_message(b"y" * 50, "text/plain", now=0.0)
    s.pull(0.0, budget=1)
    assert s.abort(msg)
    assert s.events() == [MessageAborted(msg.message_id)]
    (abort,) = s.pull(0.0)
    assert abort.flag == "#" and abort.header("Byte-Range") == "11-10/50"
    assert not s.abort(msg)


def test_abort_before_anything_went_out_sends_nothing() -> None:
    s = session()
    msg = s.send_message(b"z", "text/plain", now=0.0)
    assert s.abort(msg)
    assert s.pull(0.0) == []


def test_abort_after_last_chunk_is_refused() -> None:
    s = session()
    msg = s.send_message(b"z", "text/plain", now=0.0)
    s.pull(0.0)
    assert not s.abort(msg)


def test_failure_report_no_expects_no_response() -> None:
    s = session()
    msg = s.send_message(b"x" * 10, "text/plain", failure_report="no", now=0.0)
    (frame,) = s.pull(0.0)
    assert frame.header("Failure-Report") == "no"
    assert s.events() == [MessageDelivered(msg.message_id, confirmed=False)]
    assert s.next_deadline() is None


def test_failure_report_partial_settles_after_timeout_or_fails_on_error() -> None:
    s = session(transaction_timeout=10.0)
    ok = s.send_message(b"x", "text/plain", failure_report="partial", now=0.0)
    bad = s.send_message(b"y", "text/plain", failure_report="partial", now=0.0)
    f_ok, f_bad = s.pull(0.0)
    assert f_ok.header("Failure-Report") == "partial"
    s.handle_response(make_response(f_bad, 415), 1.0)
    assert s.events() == [MessageFailed(bad.message_id, 415, "Unsupported Media Type")]
    s.on_timer(10.0)
    assert s.events() == [MessageDelivered(ok.message_id, confirmed=False)]


def test_success_report_requested_waits_for_report_covering_all_bytes() -> None:
    s = session(chunk_size=10)
    msg = s.send_message(b"x" * 20, "text/plain", success_report=True, now=0.0)
    frames = s.pull(0.0)
    assert all(f.header("Success-Report") == "yes" for f in frames)
    answer_all(s, frames)
    assert s.events() == []  # 200s are hop-by-hop: not enough
    s.handle_request(report_frame(msg.message_id, "000 200 OK", "1-10/20"), 1.0)
    assert s.events() == []
    s.handle_request(report_frame(msg.message_id, "000 200 OK", "11-20/20"), 1.0)
    assert s.events() == [MessageDelivered(msg.message_id, True)]
    assert s.pull(1.0) == []  # REPORTs are never answered
    s.handle_request(report_frame(msg.message_id, "000 200 OK", "1-20/20"), 2.0)
    (late,) = s.events()
    assert isinstance(late, ReportIgnored) and late.message_id == msg.message_id


def test_success_report_timeout() -> None:
    s = session(report_timeout=5.0)
    msg = s.send_message(b"x", "text/plain", success_report=True, now=0.0)
    answer_all(s, s.pull(0.0), now=1.0)
    assert s.next_deadline() == 6.0
    s.on_timer(6.0)
    assert s.events() == [MessageFailed(msg.message_id, 408, "no success report")]


def test_success_report_no_is_sent_explicitly() -> None:
    s = session()
    s.send_message(b"x", "text/plain", success_report=False, now=0.0)
    (frame,) = s.pull(0.0)
    assert frame.header("Success-Report") == "no"


def test_failure_report_fails_message() -> None:
    s = session()
    msg = s.send_message(b"x", "text/plain", now=0.0)
    s.pull(0.0)
    s.handle_request(report_frame(msg.message_id, "000 480 user offline", "1-1/1"), 0.0)
    assert s.events() == [MessageFailed(msg.message_id, 480, "user offline")]
    assert s.pull(0.0) == []


def test_report_for_unknown_message_is_ignored_and_not_answered() -> None:
    s = session()
    s.handle_request(report_frame("nosuchmsg", "000 200 OK", "1-1/1"), 0.0)
    assert s.events() == [ReportIgnored("nosuchmsg", 200, "unknown message")]
    s.handle_request(Frame.request("REPORT", [B], [A], headers=[("Message-ID", "m123")]), 0.0)
    assert s.events() == [RequestRejected(400, "malformed REPORT", "REPORT", "m123", False)]
    assert s.pull(0.0) == []


def test_unknown_response_is_reported_unmatched() -> None:
    s = session()
    assert not s.handle_response(Frame("nosuchtid", None, 200, "OK"), 0.0)


# --- receiving --------------------------------------------------------------------------


def test_send_is_answered_200_and_delivered() -> None:
    s = session()
    frame = send_frame(b"hi there")
    s.handle_request(frame, 0.0)
    (resp,) = s.pull(0.0)
    assert (resp.tid, resp.status) == (frame.tid, 200)
    assert resp.header("To-Path") == str(A) and resp.header("From-Path") == str(B)
    assert s.events() == [MessageReceived("msg1", "text/plain", b"hi there", False, "yes")]


def test_empty_send_answered_and_not_delivered() -> None:
    s = session()
    for frame in (
        send_frame(b"", content_type=None),
        send_frame(b"", content_type=None, byte_range="1-0/0", mid="msg2"),
    ):
        s.handle_request(frame, 0.0)
        assert responses(s.pull(0.0)) == [200]
    assert s.events() == []


def test_failure_report_no_gets_no_response_even_for_errors() -> None:
    s = session(accept_types=["message/cpim"])
    s.handle_request(send_frame(headers=[("Failure-Report", "no")], content_type="text/plain"), 0.0)
    assert s.pull(0.0) == []
    (event,) = s.events()
    assert isinstance(event, RequestRejected) and event.code == 415 and not event.answered


def test_failure_report_no_still_delivers() -> None:
    s = session()
    s.handle_request(send_frame(headers=[("Failure-Report", "no")]), 0.0)
    assert s.pull(0.0) == []
    assert s.events() == [MessageReceived("msg1", "text/plain", b"hello", False, "no")]


def test_failure_report_partial_answers_only_errors() -> None:
    s = session(accept_types=["text/plain"])
    s.handle_request(send_frame(headers=[("Failure-Report", "partial")]), 0.0)
    assert s.pull(0.0) == []
    s.handle_request(
        send_frame(mid="m2", headers=[("Failure-Report", "partial")], content_type="image/png"), 0.0
    )
    assert responses(s.pull(0.0)) == [415]


def test_unaccepted_type_gets_415_for_every_chunk() -> None:
    s = session(accept_types=["text/plain", "message/cpim"])
    s.handle_request(
        send_frame(b"a" * 5, byte_range="1-5/10", flag="+", content_type="text/html"), 0
    )
    s.handle_request(send_frame(b"b" * 5, byte_range="6-10/10", content_type=None), 0.0)
    assert responses(s.pull(0.0)) == [415, 415]
    assert all(isinstance(e, RequestRejected) and e.code == 415 for e in s.events())


def test_body_without_content_type_gets_400() -> None:
    s = session()
    s.handle_request(send_frame(b"abc", content_type=None), 0.0)
    assert responses(s.pull(0.0)) == [400]


def test_missing_message_id_gets_400() -> None:
    s = session()
    frame = Frame.request("SEND", [B], [A], body=b"x", content_type="text/plain")
    s.handle_request(frame, 0.0)
    assert responses(s.pull(0.0)) == [400]


def test_chunk_over_max_chunk_size_gets_413() -> None:
    s = session(max_chunk_size=10)
    s.handle_request(send_frame(b"x" * 11), 0.0)
    assert responses(s.pull(0.0)) == [413]


def test_message_over_max_message_size_gets_413() -> None:
    s = session(max_message_size=100)
    s.handle_request(send_frame(b"x" * 50, byte_range="1-50/200", flag="+"), 0.0)
    s.handle_request(send_frame(b"x" * 50, byte_range="1-*/*", flag="+", mid="m2"), 0.0)
    s.handle_request(send_frame(b"x" * 60, byte_range="51-110/*", flag="+", mid="m2"), 0.0)
    assert responses(s.pull(0.0)) == [413, 200, 413]
    assert [e.code for e in of_type(s.events(), RequestRejected)] == [413, 413]


def test_unknown_method_gets_501() -> None:
    s = session()
    s.handle_request(send_frame(method="FOO"), 0.0)
    assert responses(s.pull(0.0)) == [501]


def test_send_only_session_refuses_messages_with_403_but_accepts_empty_send() -> None:
    s = session(direction="sendonly")
    s.handle_request(send_frame(b"", content_type=None), 0.0)
    s.handle_request(send_frame(), 0.0)
    assert responses(s.pull(0.0)) == [200, 403]


def test_receive_only_session_cannot_send() -> None:
    s = session(direction="recvonly")
    msg = s.send_message(b"x", "text/plain", now=0.0)
    assert isinstance(msg.outcome, MessageFailed) and msg.outcome.code == 403


def _chunks(body: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(i + 1, body[i : i + size]) for i in range(0, len(body), size)]


def test_interleaved_messages_are_reassembled() -> None:
    s = session()
    one, two = b"1" * 30, b"2" * 25
    c1, c2 = _chunks(one, 10), _chunks(two, 10)
    order = [(c1, "m1", one), (c2, "m2", two)]
    for i in range(3):
        for chunks, mid, body in order:
            if i < len(chunks):
                start, data = chunks[i]
                end = start + len(data) - 1
                flag = "$" if end == len(body) else "+"
                ct = "text/plain" if start == 1 else None
                s.handle_request(
                    send_frame(
                        data,
                        mid=mid,
                        byte_range=f"{start}-{end}/{len(body)}",
                        flag=flag,
                        content_type=ct,
                    ),
                    0.0,
                )
    got = {e.message_id: e.body for e in of_type(s.events(), MessageReceived)}
    assert got == {"m1": one, "m2": two}
    assert set(responses(s.pull(0.0))) == {200}


def test_out_of_order_chunks_are_reassembled() -> None:
    s = session()
    body = random.Random(2).randbytes(95)
    pieces = _chunks(body, 10)
    random.Random(3).shuffle(pieces)
    for start, data in pieces:
        end = start + len(data) - 1
        flag = "$" if end == len(body) else "+"
        ct = "text/plain" if start == 1 else None
        s.handle_request(
            send_frame(data, byte_range=f"{start}-{end}/95", flag=flag, content_type=ct), 0
        )
    (event,) = of_type(s.events(), MessageReceived)
    assert event.body == body


def test_star_ranges_end_with_the_dollar_chunk() -> None:
    s = session()
    s.handle_request(send_frame(b"abc", byte_range="1-*/*", flag="+"), 0.0)
    s.handle_request(send_frame(b"def", byte_range="4-*/*", flag="+", content_type=None), 0.0)
    assert s.events() == []
    s.handle_request(send_frame(b"gh", byte_range="7-8/*", content_type=None), 0.0)
    assert s.events() == [MessageReceived("msg1", "text/plain", b"abcdefgh", False, "yes")]


def test_peer_abort_is_reported() -> None:
    s = session()
    s.handle_request(send_frame(b"abc", byte_range="1-3/10", flag="+"), 0.0)
    s.handle_request(send_frame(b"", byte_range="4-3/10", flag="#", content_type=None), 0.0)
    assert s.events() == [IncomingAborted("msg1")]
    assert responses(s.pull(0.0)) == [200, 200]


def test_duplicate_chunk_is_answered_but_delivered_once() -> None:
    s = session()
    s.handle_request(send_frame(b"x"), 0.0)
    s.handle_request(send_frame(b"x"), 0.0)
    assert len(of_type(s.events(), MessageReceived)) == 1
    assert responses(s.pull(0.0)) == [200, 200]


def test_incomplete_message_expires_with_failure_report() -> None:
    s = session(incomplete_timeout=10.0)
    s.handle_request(send_frame(b"abc", byte_range="1-3/10", flag="+"), 0.0)
    s.pull(0.0)
    deadline = s.next_deadline()
    assert deadline is not None and deadline <= 10.0
    s.on_timer(deadline)
    s.on_timer(20.0)
    assert s.events() == [IncomingExpired("msg1")]
    (report,) = s.pull(20.0)
    assert report.method == "REPORT" and report.header("Status") == "000 408 message incomplete"
    assert report.header("Byte-Range") == "1-3/10"


# --- REPORTs we generate ----------------------------------------------------------------


def test_report_success_builds_report_along_the_from_path() -> None:
    s = session()
    frame = Frame.request(
        "SEND",
        [B],
        [RELAY, A],
        headers=[("Message-ID", "m42"), ("Success-Report", "yes"), ("Byte-Range", "1-5/5")],
        body=b"hello",
        content_type="text/plain",
    )
    s.handle_request(frame, 0.0)
    (event,) = s.events()
    assert isinstance(event, MessageReceived) and event.success_report
    s.pull(0.0)
    assert s.report_success("m42")
    (report,) = s.pull(0.0)
    assert report.method == "REPORT"
    assert report.header("To-Path") == f"{RELAY} {A}"
    assert report.header("From-Path") == str(B)
    assert report.message_id == "m42"
    assert report.header("Byte-Range") == "1-5/5"
    assert report.header("Status") == "000 200 OK"
    assert report.header("Success-Report") is None and report.header("Failure-Report") is None
    assert report.body == b""


def test_report_success_only_when_requested() -> None:
    s = session()
    s.handle_request(send_frame(), 0.0)
    assert not s.report_success("msg1")
    assert not s.report_success("unknown")


def test_report_failure_content() -> None:
    s = session()
    s.handle_request(send_frame(b"12345"), 0.0)
    s.pull(0.0)
    assert s.report_failure("msg1", 480, "page-mode user offline")
    (report,) = s.pull(0.0)
    assert report.header("Status") == "000 480 page-mode user offline"
    assert report.header("Byte-Range") == "1-5/5" and report.message_id == "msg1"


def test_report_failure_not_sent_when_failure_report_no() -> None:
    s = session()
    s.handle_request(send_frame(headers=[("Failure-Report", "no")]), 0.0)
    assert not s.report_failure("msg1", 480)


def test_auto_success_report() -> None:
    s = session(auto_success_report=True)
    s.handle_request(send_frame(headers=[("Success-Report", "yes")]), 0.0)
    frames = s.pull(0.0)
    assert [f.status or f.method for f in frames] == [200, "REPORT"]


# --- lifecycle --------------------------------------------------------------------------


def test_connection_lost_fails_pending_with_408() -> None:
    s = session()
    s.bind(object(), send_empty=False)
    queued = s.send_message(b"x", "text/plain", now=0.0)
    s.connection_lost("peer reset")
    assert s.events() == [
        MessageFailed(queued.message_id, 408, "peer reset"),
        SessionClosed("peer reset"),
    ]
    assert s.connection is None and s.closed


def test_closed_session_refuses_sends() -> None:
    s = session()
    s.close()
    assert s.events() == [SessionClosed("closed")]
    msg = s.send_message(b"x", "text/plain", now=0.0)
    assert isinstance(msg.outcome, MessageFailed) and msg.outcome.code == 481
    s.handle_request(send_frame(), 0.0)
    assert responses(s.pull(0.0)) == [481]


def test_bind_as_opener_sends_an_empty_send_only_with_nothing_queued() -> None:
    s = session()
    empty = s.bind(object(), send_empty=True)
    assert empty is not None and empty.empty
    (first,) = s.pull(0.0)
    assert first.message_id == empty.message_id and first.body == b""
    # A message queued before the connection is the first SEND itself (§5.4: it may
    # carry a body): no empty SEND, no extra round trip.
    s = session()
    queued = s.send_message(b"x", "text/plain", now=0.0)
    assert s.bind(object(), send_empty=True) is None
    (first,) = s.pull(0.0)
    assert first.message_id == queued.message_id and first.body == b"x"
