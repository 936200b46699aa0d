"""Tests for gw.msrp.chunks: Byte-Range, splitting and reassembly."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gw.msrp.chunks import (
    AddResult,
    ByteRange,
    Chunk,
    MessageTooLarge,
    Reassembler,
    ReassemblyBudget,
    format_byte_range,
    parse_byte_range,
    split_message,
)

MiB = 1024 * 1024


def _body(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _feed(
    r: Reassembler, mid: str, chunks: list[Chunk], now: float = 0.0, ctype: str = "text/plain"
) -> list[AddResult]:
    return [
        r.add(mid, c.byte_range, bytes(c.data), c.flag, ctype if c.start == 1 else None, now)
        for c in chunks
    ]


def _delivered(results: list[AddResult]) -> list[bytes]:
    return [res.completed.body for res in results if res.completed is not None]


# --- Byte-Range -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1-2048/4096", ByteRange(1, 2048, 4096)),
        ("1-0/0", ByteRange(1, 0, 0)),
        ("1-*/*", ByteRange(1, None, None)),
        ("2049-*/4096", ByteRange(2049, None, 4096)),
        ("1-100/*", ByteRange(1, 100, None)),
        ("5-4/10", ByteRange(5, 4, 10)),  # zero-length chunk
        ("11-10/10", ByteRange(11, 10, 10)),
        (" 1-5/5\t", ByteRange(1, 5, 5)),
        ("007-010/020", ByteRange(7, 10, 20)),
    ],
)
def test_parse_byte_range_valid(value: str, expected: ByteRange) -> None:
    assert parse_byte_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "1-5",
        "1/5",
        "0-5/5",  # start is 1-based
        "5-3/10",  # end < start - 1
        "1-11/10",  # end > total
        "12-*/10",  # start beyond total + 1
        "*-5/5",
        "1-5/-5",
        "-1-5/5",
        "1 - 5/5",
        "1-5/5/5",
        "a-b/c",
        "1-5/5x",
        "\uff11-5/5",  # fullwidth (non-ASCII) digit
        "1-\u00b2/5",  # superscript two
        "1" * 25 + "-*/*",  # absurdly long number
    ],
)
def test_parse_byte_range_invalid(value: str) -> None:
    assert parse_byte_range(value) is None


@pytest.mark.parametrize("value", ["1-2048/4096", "1-0/0", "1-*/*", "7-*/100", "3-9/*"])
def test_format_round_trip(value: str) -> None:
    br = parse_byte_range(value)
    assert br is not None
    assert format_byte_range(br) == value == str(br)


@pytest.mark.parametrize(("s", "e", "t"), [(0, 1, 1), (3, 1, 5), (1, 6, 5), (1, None, -1)])
def test_byte_range_constructor_rejects(s: int, e: int | None, t: int | None) -> None:
    with pytest.raises(ValueError):
        ByteRange(s, e, t)


@given(st.text(max_size=30))
def test_parse_never_raises(value: str) -> None:
    br = parse_byte_range(value)
    if br is not None:
        assert parse_byte_range(format_byte_range(br)) == br


# --- split_message --------------------------------------------------------------------


def test_split_empty_body() -> None:
    (chunk,) = split_message(b"")
    assert (chunk.start, chunk.end, chunk.total, chunk.last, chunk.flag) == (1, 0, 0, True, "$")
    assert str(chunk.byte_range) == "1-0/0"
    assert bytes(chunk.data) == b""


@pytest.mark.parametrize(("size", "count"), [(1, 1), (2047, 1), (2048, 1), (2049, 2), (4096, 2)])
def test_split_sizes(size: int, count: int) -> None:
    body = _body(size)
    chunks = list(split_message(body))
    assert len(chunks) == count
    assert all(len(c.data) <= 2048 for c in chunks)
    assert [c.last for c in chunks] == [False] * (count - 1) + [True]
    assert b"".join(c.data for c in chunks) == body
    assert chunks[-1].end == size
    assert all(c.total == size and c.end - c.start + 1 == len(c.data) for c in chunks)


def test_split_is_zero_copy() -> None:
    body = bytearray(b"abcdef")
    chunks = list(split_message(memoryview(body), chunk_size=4))
    body[0] = ord("X")
    assert bytes(chunks[0].data) == b"Xbcd"


def test_split_max_size_is_whole_message_limit() -> None:
    assert len(list(split_message(b"x" * 100, chunk_size=10, max_size=100))) == 10
    with pytest.raises(MessageTooLarge) as exc:
        split_message(b"x" * 101, chunk_size=10, max_size=100)  # raises eagerly, before next()
    assert (exc.value.size, exc.value.limit) == (101, 100)


def test_split_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        split_message(b"abc", chunk_size=0)
    with pytest.raises(ValueError):
        split_message(memoryview(b"abcdef")[::2])


# --- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 2049, 3 * MiB + 7, 5 * MiB])
@pytest.mark.parametrize("order", ["forward", "reversed", "shuffled"])
def test_round_trip(size: int, order: str) -> None:
    body = _body(size, seed=size)
    chunks = list(split_message(body))
    if order == "reversed":
        chunks.reverse()
    elif order == "shuffled":
        random.Random(size).shuffle(chunks)
    r = Reassembler()
    results = _feed(r, "m1", chunks)
    assert all(res.status == 200 for res in results)
    assert _delivered(results) == [body]
    assert results[-1].completed is not None
    assert results[-1].completed.content_type == "text/plain"
    assert results[-1].completed.total == size
    assert len(r) == 0


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 100 * 1024),
    chunk_size=st.integers(256, 16 * 1024),
    rnd=st.randoms(use_true_random=False),
)
def test_round_trip_property(size: int, chunk_size: int, rnd: random.Random) -> None:
    body = rnd.randbytes(size)
    chunks = list(split_message(body, chunk_size))
    rnd.shuffle(chunks)
    results = _feed(Reassembler(), "m", chunks)
    assert _delivered(results) == [body]


@settings(max_examples=100, deadline=None)
@given(
    body=st.binary(max_size=300),
    chunk_size=st.integers(1, 40),
    rnd=st.randoms(use_true_random=False),
    dup=st.booleans(),
    star=st.booleans(),
)
def test_round_trip_small_chunks(
    body: bytes, chunk_size: int, rnd: random.Random, dup: bool, star: bool
) -> None:
    chunks = list(split_message(body, chunk_size))
    if dup:
        chunks += rnd.sample(chunks, k=len(chunks) // 2)
    rnd.shuffle(chunks)
    r = Reassembler()
    results = []
    for c in chunks:
        br = ByteRange(c.start, None if star else c.end, None if star else c.total)
        results.append(r.add("m", br, bytes(c.data), c.flag, None, 0.0))
    assert all(res.status == 200 for res in results)
    assert _delivered(results) == [body]  # exactly once, even with duplicates


def test_interleaved_messages() -> None:
    bodies = {f"m{i}": _body(10_000 + i, seed=i) for i in range(5)}
    work = [(mid, c) for mid, b in bodies.items() for c in split_message(b, 1000)]
    random.Random(7).shuffle(work)
    r = Reassembler()
    got: dict[str, bytes] = {}
    for mid, c in work:
        res = r.add(mid, c.byte_range, bytes(c.data), c.flag, "text/plain", 0.0)
        assert res.status == 200
        if res.completed is not None:
            assert res.completed.message_id not in got
            got[res.completed.message_id] = res.completed.body
    assert got == bodies


# --- reassembly details ---------------------------------------------------------------


def test_single_chunk_fast_path_no_copy() -> None:
    r = Reassembler()
    data = b"hello"
    res = r.add("m", ByteRange(1, 5, 5), data, "$", "text/plain", 0.0)
    assert res.completed is not None
    assert res.completed.body is data
    assert len(r) == 0


def test_accepts_memoryview_data() -> None:
    body = _body(5000)
    r = Reassembler()
    chunks = list(split_message(body, 1000))
    results = [r.add("m", c.byte_range, c.data, c.flag, None, 0.0) for c in chunks[::-1]]
    single = r.add("s", ByteRange(1, 3, 3), memoryview(b"abc"), "$", None, 0.0)
    assert _delivered([*results, single]) == [body, b"abc"]
    assert all(type(b) is bytes for b in _delivered([*results, single]))


def test_empty_message() -> None:
    res = Reassembler().add("m", ByteRange(1, 0, 0), b"", "$", "text/plain", 0.0)
    assert res.completed is not None
    assert res.completed.body == b""
    assert res.completed.total == 0


def test_overlap_later_data_overwrites() -> None:
    r = Reassembler()
    assert r.add("m", ByteRange(1, 6, 10), b"aaaaaa", "+", None, 0.0).completed is None
    assert r.add("m", ByteRange(4, 8, 10), b"BBBBB", "+", None, 0.0).completed is None
    assert r.received_ranges("m") == [(1, 8)]
    res = r.add("m", ByteRange(8, 10, 10), b"ccc", "$", None, 0.0)
    assert res.completed is not None
    assert res.completed.body == b"aaaBBBBccc"


def test_star_end_and_total() -> None:
    r = Reassembler()
    assert r.add("m", ByteRange(1, None, None), b"abc", "+", "text/plain", 0.0).status == 200
    assert r.add("m", ByteRange(4, None, None), b"def", "+", None, 0.0).completed is None
    res = r.add("m", ByteRange(7, None, None), b"gh", "$", None, 0.0)
    assert res.completed is not None
    assert (res.completed.body, res.completed.total) == (b"abcdefgh", 8)


def test_star_total_last_chunk_first() -> None:
    r = Reassembler()
    assert r.add("m", ByteRange(4, 6, None), b"def", "$", None, 0.0).completed is None
    assert r.add("m", ByteRange(1, 3, None), b"abc", "+", None, 0.0).completed is not None


def test_total_learned_from_later_chunk() -> None:
    r = Reassembler()
    r.add("m", ByteRange(1, None, None), b"abc", "+", None, 0.0)
    r.add("m", ByteRange(7, 9, 9), b"ghi", "$", None, 0.0)
    res = r.add("m", ByteRange(4, 6, None), b"def", "+", None, 0.0)
    assert res.completed is not None
    assert res.completed.body == b"abcdefghi"


def test_interrupted_chunk_shorter_than_declared() -> None:
    r = Reassembler()
    assert r.add("m", ByteRange(1, 10, 10), b"abcd", "+", None, 0.0).status == 200
    assert r.received_ranges("m") == [(1, 4)]
    res = r.add("m", ByteRange(5, 10, 10), b"efghij", "$", None, 0.0)
    assert res.completed is not None
    assert res.completed.body == b"abcdefghij"


def test_content_type_from_first_chunk_carrying_it() -> None:
    r = Reassembler()
    r.add("m", ByteRange(4, 6, 6), b"def", "$", None, 0.0)
    r.add("m", ByteRange(1, 3, 6), b"abc", "+", "text/html", 0.0)
    chunks = list(split_message(b"abcdef", 3))
    r.add("n", chunks[0].byte_range, b"abc", "+", "text/plain", 0.0)
    res = r.add("n", chunks[1].byte_range, b"def", "$", "text/html", 0.0)
    assert res.completed is not None
    assert res.completed.content_type == "text/plain"


def test_abort_drops_message() -> None:
    r = Reassembler()
    r.add("m", ByteRange(1, 3, 9), b"abc", "+", None, 0.0)
    res = r.add("m", ByteRange(4, 6, 9), b"def", "#", None, 0.0)
    assert (res.status, res.aborted, res.completed) == (200, True, None)
    assert len(r) == 0
    assert r.received_ranges("m") == []
    late = r.add("m", ByteRange(7, 9, 9), b"ghi", "$", None, 0.0)
    assert late.completed is None
    assert len(r) == 0


def test_exactly_once_delivery_on_retransmission() -> None:
    r = Reassembler()
    chunks = list(split_message(b"x" * 5000, 2048))
    assert len(_delivered(_feed(r, "m", chunks))) == 1
    again = _feed(r, "m", chunks)
    assert [res.status for res in again] == [200] * 3
    assert _delivered(again) == []
    assert r.received_ranges("m") == [(1, 5000)]
    single = list(split_message(b"hi"))
    assert len(_delivered(_feed(r, "s", single) + _feed(r, "s", single))) == 1


def test_finished_ids_lru_is_bounded() -> None:
    r = Reassembler(max_finished_ids=2)
    for mid in ("a", "b", "c"):
        r.add(mid, ByteRange(1, 1, 1), b"x", "$", None, 0.0)
    # "a" was evicted: a retransmission would deliver again (documented bound).
    assert r.add("a", ByteRange(1, 1, 1), b"x", "$", None, 0.0).completed is not None
    assert r.add("c", ByteRange(1, 1, 1), b"x", "$", None, 0.0).completed is None


@pytest.mark.parametrize(
    ("first", "data", "flag", "second", "data2", "flag2"),
    [
        (ByteRange(1, 3, 6), b"abc", "+", ByteRange(4, None, 6), b"defg", "+"),  # beyond total
        (ByteRange(1, 3, 6), b"abc", "+", ByteRange(4, 6, 7), b"def", "$"),  # total changed
        (ByteRange(1, None, None), b"abcdefgh", "+", ByteRange(4, 6, 6), b"def", "+"),  # > total
        (ByteRange(4, 6, None), b"def", "$", ByteRange(7, 9, None), b"ghi", "+"),  # after '$'
        (ByteRange(1, 3, 6), b"abc", "+", ByteRange(4, 5, 6), b"def", "+"),  # body > declared
        (ByteRange(1, 3, 6), b"abc", "+", ByteRange(4, 6, 6), b"de", "$"),  # short '$' chunk
        (ByteRange(1, 3, 9), b"abc", "+", ByteRange(4, 6, 9), b"def", "$"),  # '$' before total
    ],
)
def test_inconsistent_chunk_is_400_and_drops_state(
    first: ByteRange, data: bytes, flag: str, second: ByteRange, data2: bytes, flag2: str
) -> None:
    r = Reassembler()
    assert r.add("m", first, data, flag, None, 0.0).status == 200
    res = r.add("m", second, data2, flag2, None, 0.0)
    assert res.status == 400
    assert res.reason
    assert len(r) == 0
    assert r.add("m", ByteRange(1, 1, None), b"a", "+", None, 1.0).status == 400


def test_bad_flag_or_message_id_is_400_without_state_change() -> None:
    r = Reassembler()
    r.add("m", ByteRange(1, 1, 2), b"a", "+", None, 0.0)
    assert r.add("m", ByteRange(2, 2, 2), b"b", "?", None, 0.0).status == 400
    assert r.add("", ByteRange(1, 1, 1), b"b", "$", None, 0.0).status == 400
    assert r.add("m", ByteRange(2, 2, 2), b"b", "$", None, 0.0).completed is not None


@pytest.mark.parametrize(
    "byte_range",
    [ByteRange(1, 10, 101), ByteRange(1, 101, None), ByteRange(95, None, None)],
)
def test_over_limit_rejected_at_first_chunk(byte_range: ByteRange) -> None:
    r = Reassembler(max_message_size=100)
    res = r.add("m", byte_range, b"x" * 10, "+", None, 0.0)
    assert res.status == 413
    assert len(r) == 0
    assert r.add("m", ByteRange(11, 20, None), b"x" * 10, "+", None, 0.0).status == 413
    assert r.add("m", ByteRange(21, 30, None), b"x" * 10, "#", None, 0.0).status == 200


def test_over_limit_revealed_mid_message_drops_state() -> None:
    r = Reassembler(max_message_size=100)
    assert r.add("m", ByteRange(1, None, None), b"x" * 60, "+", None, 0.0).status == 200
    assert r.add("m", ByteRange(61, None, None), b"x" * 60, "+", None, 0.0).status == 413
    assert len(r) == 0
    assert r.received_ranges("m") == []


def test_message_at_limit_is_accepted() -> None:
    r = Reassembler(max_message_size=100)
    assert _delivered(_feed(r, "m", list(split_message(b"x" * 100, 30)))) == [b"x" * 100]


def test_pending_limit_is_413_for_new_messages_only() -> None:
    r = Reassembler(max_pending_messages=2)
    assert r.add("a", ByteRange(1, 1, 2), b"a", "+", None, 0.0).status == 200
    assert r.add("b", ByteRange(1, 1, 2), b"b", "+", None, 0.0).status == 200
    assert r.add("c", ByteRange(1, 1, 2), b"c", "+", None, 0.0).status == 413
    assert r.add("d", ByteRange(1, 1, 1), b"d", "$", None, 0.0).completed is not None  # fast path
    assert r.add("a", ByteRange(2, 2, 2), b"a", "$", None, 0.0).completed is not None
    assert r.add("e", ByteRange(1, 1, 2), b"e", "+", None, 0.0).status == 200


def test_expire() -> None:
    r = Reassembler(incomplete_timeout=60.0)
    r.add("old", ByteRange(1, 1, 2), b"a", "+", None, 0.0)
    r.add("busy", ByteRange(1, 1, 3), b"a", "+", None, 0.0)
    r.add("busy", ByteRange(2, 2, 3), b"b", "+", None, 50.0)
    assert r.expire(59.0) == []
    assert r.expire(60.0) == ["old"]
    assert len(r) == 1
    assert r.add("old", ByteRange(2, 2, 2), b"b", "$", None, 61.0).status == 413
    assert r.expire(110.0) == ["busy"]
    assert r.expire(1000.0) == []


def test_received_ranges() -> None:
    r = Reassembler()
    assert r.received_ranges("nope") == []
    r.add("m", ByteRange(11, 20, 50), b"x" * 10, "+", None, 0.0)
    r.add("m", ByteRange(31, 40, 50), b"x" * 10, "+", None, 0.0)
    assert r.received_ranges("m") == [(11, 20), (31, 40)]
    r.add("m", ByteRange(21, 30, 50), b"x" * 10, "+", None, 0.0)
    assert r.received_ranges("m") == [(11, 40)]
    r.add("m", ByteRange(1, 5, 50), b"x" * 5, "+", None, 0.0)
    r.add("m", ByteRange(6, 10, 50), b"x" * 5, "+", None, 0.0)
    assert r.received_ranges("m") == [(1, 40)]


def test_reassembler_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Reassembler(max_pending_messages=0)
    with pytest.raises(ValueError):
        Reassembler(incomplete_timeout=0)
    with pytest.raises(ValueError):
        Reassembler(max_message_size=-1)


# -- memory: what arrives, not what is declared; a node-wide budget (issue 16 §2) -----------


def test_memory_grows_with_the_bytes_that_arrive_not_with_the_declared_total() -> None:
    budget = ReassemblyBudget(1 << 30)
    r = Reassembler(budget=budget)
    for i in range(64):  # the attack: one byte each, declaring 64 KiB
        assert r.add(f"m{i}", ByteRange(1, 1, 65536), b"x", "+", None, 0.0).status == 200
    assert budget.held == 64
    assert r.add("m0", ByteRange(65536, 65536, 65536), b"z", "+", None, 0.0).status == 200
    assert budget.held == 65, "a chunk past a gap holds its own bytes, not the gap"


def test_chunks_in_any_order_still_make_the_message_and_give_their_bytes_back() -> None:
    budget = ReassemblyBudget(1 << 20)
    r = Reassembler(budget=budget)
    body = _body(1000, seed=3)
    chunks = list(split_message(body, 100))
    random.Random(5).shuffle(chunks)
    assert _delivered(_feed(r, "m", chunks)) == [body]
    assert budget.held == 0 and len(r) == 0


def test_the_node_budget_refuses_413_and_every_end_gives_bytes_back() -> None:
    budget = ReassemblyBudget(100)
    a, b = Reassembler(budget=budget), Reassembler(budget=budget)  # two sessions
    assert a.add("a", ByteRange(1, 60, 200), b"x" * 60, "+", None, 0.0).status == 200
    refused = b.add("b", ByteRange(1, 50, 200), b"y" * 50, "+", None, 0.0)
    assert (refused.status, refused.reason) == (413, "reassembly memory full")
    assert budget.refused == 1 and budget.held == 60 and len(b) == 0
    assert b.add("c", ByteRange(1, 40, 200), b"y" * 40, "+", None, 0.0).status == 200
    assert budget.held == 100
    a.expire(1000.0)  # incomplete timeout
    assert budget.held == 40
    assert b.add("c", ByteRange(41, 50, 200), b"y" * 10, "#", None, 0.0).status == 200  # abort
    assert budget.held == 0
    assert a.add("d", ByteRange(1, 10, 20), b"x" * 10, "+", None, 0.0).status == 200
    a.clear()  # the session ended
    assert budget.held == 0
