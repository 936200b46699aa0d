"""Property tests: serialize/parse round trip, split-invariance, large bodies."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gw.msrp.frame import Event, Frame, FrameError, FrameParser, FrameReceived, serialize
from gw.msrp.uri import format_path, parse_path
from tests.msrp.test_uri import uris

_SPECIAL = {"to-path", "from-path", "content-type", "byte-range"}
_TIDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}", fullmatch=True)
_NAMES = st.from_regex(r"[A-Za-z][!#$%&'*+\-.0-9A-Z^_`a-z|~]{0,15}", fullmatch=True).filter(
    lambda n: n.lower() not in _SPECIAL
)
_VALUES = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40).map(str.strip)
_COMMENTS = st.none() | st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=20)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    tid = draw(_TIDS)
    headers = [
        ("To-Path", format_path(draw(st.lists(uris, min_size=1, max_size=3)))),
        ("From-Path", format_path(draw(st.lists(uris, min_size=1, max_size=3)))),
    ]
    if draw(st.booleans()):
        start = draw(st.integers(1, 10**6))
        headers.append(("Byte-Range", f"{start}-*/*"))
    headers += draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=5))
    body = draw(st.binary(max_size=200) | st.sampled_from([b"-------" + tid.encode() + b"\r\n"]))
    if body or draw(st.booleans()):
        headers.append(("Content-Type", draw(st.sampled_from(["text/plain", "message/cpim"]))))
    if draw(st.booleans()):
        method = draw(st.from_regex(r"[A-Z]{1,10}", fullmatch=True))
        return Frame(tid, method, headers=headers, body=body, flag=draw(st.sampled_from("+$#")))
    return Frame(tid, None, draw(st.integers(0, 999)), draw(_COMMENTS), headers[:2])


def _encode(frame: Frame) -> bytes:
    try:
        return serialize(frame)
    except ValueError:
        assume(False)
        raise


@given(frames())
def test_round_trip(frame: Frame) -> None:
    data = _encode(frame)
    events = FrameParser().feed(data)
    assert events == [FrameReceived(frame)]
    assert serialize(events[0].frame) == data  # type: ignore[union-attr]


def _feed_pieces(data: bytes, cuts: list[int], **limits: int) -> list[Event]:
    parser = FrameParser(**limits)
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [e for a, b in itertools.pairwise(bounds) for e in parser.feed(data[a:b])]


def _stream() -> bytes:
    """Small stream mixing good frames, a 413, 400s and near-miss end-lines."""
    to, frm = "msrp://b.example:2/b;tcp", "msrp://a.example:1/a;tcp"
    good = Frame.request(
        "SEND",
        parse_path(to),
        parse_path(frm),
        tid="t1t1",
        body=b"a\r\n-------t1t1\r\n-------t2t2$\r\n",
        content_type="text/plain",
    )
    big = serialize(Frame("t2t2", "SEND", headers=good.headers, body=b"B" * 40, flag="+"))
    report = (
        f"MSRP t3t3 REPORT\r\nTo-Path: {to}\r\nFrom-Path: {frm}\r\nStatus: 000 200 OK\r\n"
        "-------t3t3$\r\n"
    ).encode()
    bad = f"MSRP t4t4 SEND\r\nTo-Path: {to}\r\nOops\r\n\r\nxx\r\n-------t4t4#\r\n".encode()
    badstart = b"MSRP t5t5 go\r\n-------t5t5$\r\n"
    resp = f"MSRP t1t1 200 OK\r\nTo-Path: {frm}\r\nFrom-Path: {to}\r\n-------t1t1$\r\n".encode()
    return serialize(good) + big + report + bad + badstart + resp


_LIMITS = {"max_chunk_size": 32, "max_header_bytes": 256}


def test_stream_events() -> None:
    events = FrameParser(**_LIMITS).feed(_stream())
    kinds = [(type(e).__name__, getattr(e, "code", None)) for e in events]
    assert kinds == [
        ("FrameReceived", None),
        ("FrameError", 413),
        ("FrameReceived", None),
        ("FrameError", 400),
        ("FrameError", 400),
        ("FrameReceived", None),
    ]


def test_every_two_way_split() -> None:
    data = _stream()
    expected = FrameParser(**_LIMITS).feed(data)
    for cut in range(len(data) + 1):
        assert _feed_pieces(data, [cut], **_LIMITS) == expected, cut


def test_every_three_way_split_of_one_frame() -> None:
    data = serialize(
        Frame(
            "k9k9",
            "SEND",
            headers=[
                ("To-Path", "msrp://h;tcp"),
                ("From-Path", "msrp://g;tcp"),
                ("Content-Type", "t/p"),
            ],
            body=b"\r\n-------k9k9\r\n",
        )
    )
    expected = FrameParser().feed(data)
    assert len(expected) == 1
    for a in range(len(data) + 1):
        for b in range(a, len(data) + 1):
            assert _feed_pieces(data, [a, b]) == expected


def test_byte_at_a_time() -> None:
    data = _stream()
    expected = FrameParser(**_LIMITS).feed(data)
    assert _feed_pieces(data, list(range(len(data))), **_LIMITS) == expected


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    st.lists(frames(), min_size=1, max_size=6),
    st.lists(st.integers(0, 10**6), max_size=30),
    st.booleans(),
)
def test_random_splits(batch: list[Frame], raw_cuts: list[int], small: bool) -> None:
    data = b"".join(_encode(f) for f in batch)
    limits = {"max_chunk_size": 50} if small else {}
    expected = FrameParser(**limits).feed(data)
    if not small:
        assert expected == [FrameReceived(f) for f in batch]
    assert all(isinstance(e, FrameReceived) or not e.fatal for e in expected)
    cuts = [c % (len(data) + 1) for c in raw_cuts]
    assert _feed_pieces(data, cuts, **limits) == expected


@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_garbage_never_raises(data: bytes, cuts: list[int]) -> None:
    events = _feed_pieces(data, [c % (len(data) + 1) for c in cuts])
    assert events == FrameParser().feed(data)
    assert all(isinstance(e, (FrameReceived, FrameError)) for e in events)


@given(frames(), st.binary(max_size=60), st.integers(0, 400))
def test_corrupted_frames_never_raise(frame: Frame, junk: bytes, at: int) -> None:
    data = bytearray(_encode(frame))
    at %= len(data) + 1
    data[at:at] = junk
    assert _feed_pieces(bytes(data), [at]) == FrameParser().feed(bytes(data))


def test_five_mib_body_in_4k_pieces() -> None:
    pattern = b"line of text\r\n-------notmine$\r\n-------big5\r\n" + bytes(range(256))
    body = (pattern * (5 * 1024 * 1024 // len(pattern) + 1))[: 5 * 1024 * 1024]
    frame = Frame(
        "big5",
        "SEND",
        headers=[
            ("To-Path", "msrp://b:2/b;tcp"),
            ("From-Path", "msrp://a:1/a;tcp"),
            ("Content-Type", "application/octet-stream"),
        ],
        body=body,
    )
    data = serialize(frame)
    parser = FrameParser(max_chunk_size=8 << 20)
    events: list[Event] = []
    peak = 0
    for i in range(0, len(data), 4096):
        events += parser.feed(data[i : i + 4096])
        peak = max(peak, parser.buffered)
    assert events == [FrameReceived(frame)]
    assert parser.buffered == 0
    assert peak < len(body) + 16 * 1024
