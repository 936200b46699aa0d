"""The cheap paths: coalesced writes, lazily created per-session state, caches, tid pool."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gw.msrp.connection import MsrpConnection, SessionTable
from gw.msrp.endpoint import MsrpEndpoint, Session
from gw.msrp.events import MessageDelivered, MessageReceived, SessionEvent
from gw.msrp.frame import Frame, make_response, serialize
from gw.msrp.outgoing import OutgoingMessage
from gw.msrp.session import MsrpSession
from gw.msrp.uri import MsrpUriError, new_transaction_id, parse_msrp_uri, parse_path

A = parse_msrp_uri("msrp://a.example:2855/sessA;tcp")
B = parse_msrp_uri("msrp://b.example:2856/sessB;tcp")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[MsrpEndpoint, MsrpEndpoint]]:
    a, b = MsrpEndpoint(), MsrpEndpoint()
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


async def _established(
    a: MsrpEndpoint, b: MsrpEndpoint, received: list[SessionEvent]
) -> tuple[Session, Session]:
    """As the gateway does it: `on_event` callbacks, the passive side never `connect`s."""
    la, lb = a.new_local_uri(), b.new_local_uri()
    sb = b.create_session([la], local_uri=lb, role="passive", on_event=received.append)
    sa = a.create_session([lb], local_uri=la, role="active", on_event=lambda e: None)
    await sa.connect(5.0)
    for _ in range(100):
        if sb.link is not None:
            break
        await asyncio.sleep(0.01)
    return sa, sb


async def test_sends_in_one_loop_pass_leave_in_one_write(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    received: list[SessionEvent] = []
    sa, _ = await _established(a, b, received)
    writes: list[bytes] = []
    a.tracer = lambda direction, data, peer: writes.append(data) if direction == "out" else None
    messages = [sa.send_nowait(f"message {i}".encode(), "text/plain") for i in range(5)]
    assert writes == []  # nothing written yet: the link flushes once, in the next pass
    outcomes = await asyncio.wait_for(asyncio.gather(*(sa.outcome(m) for m in messages)), 5.0)
    assert all(isinstance(o, MessageDelivered) for o in outcomes)
    assert len(writes) == 1 and writes[0].count(b" SEND\r\n") == 5
    bodies = [e.body for e in received if isinstance(e, MessageReceived)]
    assert bodies == [f"message {i}".encode() for i in range(5)]  # in order


async def test_idle_session_holds_no_queue_event_or_containers(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    received: list[SessionEvent] = []
    sa, sb = await _established(a, b, received)
    await sa.send(b"one", "text/plain")
    await sb.send(b"two", "text/plain")
    await asyncio.sleep(0.05)
    assert sa.lean and sb.lean
    assert sa.link is not None and sa.link.core.routing_entries == 0  # answered: entry gone


async def test_handle_without_callback_still_queues_events(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    la, lb = a.new_local_uri(), b.new_local_uri()
    sb = b.create_session([la], local_uri=lb, role="passive")
    sa = a.create_session([lb], local_uri=la, role="active")
    waiting = asyncio.ensure_future(sb.connect(5.0))  # the bind event, made on demand
    await sa.connect(5.0)
    await asyncio.wait_for(waiting, 5.0)
    await sa.send(b"hello", "text/plain")
    event = await asyncio.wait_for(sb.next_event(), 5.0)
    assert isinstance(event, MessageReceived) and event.body == b"hello"


async def test_idle_session_heap_is_small(pair: tuple[MsrpEndpoint, MsrpEndpoint]) -> None:
    a, b = pair
    await _established(a, b, [])  # the connection pair exists before
    n = 200
    tracemalloc.start()
    try:
        parse_path.cache_clear()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        pairs = [await _established(a, b, []) for _ in range(n)]
        await asyncio.sleep(0.05)
        parse_path.cache_clear()  # a bounded, per-process cache
        gc.collect()
        per_pair = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert len(pairs) == n
    assert per_pair < 3000, per_pair  # both ends; it was about 16 KB with eager state


def test_parsed_paths_are_cached_and_shared() -> None:
    text = "msrp://relay.example:1/r;tcp msrp://b.example:2/b;tcp"
    assert parse_path(text) is parse_path(text)
    assert parse_path(text) == tuple(parse_msrp_uri(u) for u in text.split())
    for _ in range(2):  # errors are not cached
        with pytest.raises(MsrpUriError):
            parse_path("msrp://bad host/x;tcp")


def test_uri_text_is_built_once_and_compares_as_before() -> None:
    uri = parse_msrp_uri("MSRP://Host.Example:1/s;TCP")
    assert str(uri) is str(uri) and str(uri) == "msrp://Host.Example:1/s;TCP"
    assert uri.matches(parse_msrp_uri("msrp://host.example:1/s;tcp"))
    assert uri == parse_msrp_uri(str(uri)) and hash(uri) == hash(parse_msrp_uri(str(uri)))
    assert uri.with_session("t").session_id == "t" and str(uri.with_session("t")).endswith("/t;TCP")
    assert "_text" not in repr(uri)


def test_transaction_ids_are_unique_hex() -> None:
    ids = [new_transaction_id() for _ in range(3000)]  # several urandom batches
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 16 and int(i, 16) >= 0 for i in ids)


def _connected_cores(**kw: Any) -> tuple[MsrpSession, MsrpConnection]:
    table = SessionTable()
    s = MsrpSession(A, [B], **kw)
    table.add(s)
    conn = MsrpConnection(table, now=0.0, outbound=True)
    conn.attach(s, 0.0)
    return s, conn


def _answer(data: bytes) -> Frame:
    tid = data[5 : data.index(b" ", 5)].decode()
    request = Frame(tid, "SEND", headers=[("To-Path", str(B)), ("From-Path", str(A))])
    return make_response(request, 200)


def _send(s: MsrpSession, conn: MsrpConnection, now: float) -> tuple[bytes, OutgoingMessage]:
    msg = s.send_message(b"x", "text/plain", now=now)
    conn.wake(s)
    data = conn.data_to_send(now)
    assert data.count(b" SEND\r\n") == 1
    return data, msg


def test_routing_entries_outlive_their_transaction_then_go() -> None:
    s, conn = _connected_cores(transaction_timeout=10.0)  # routing period: 11 s
    conn.receive_data(serialize(_answer(conn.data_to_send(0.0))), 0.0)  # the empty SEND
    s.events()
    late, late_msg = _send(s, conn, 10.9)  # just before the first rotation (at 11)
    data, _ = _send(s, conn, 11.5)  # rotates: the late one is in the old generation now
    conn.receive_data(serialize(_answer(data)), 11.6)
    assert conn.routing_entries == 1 and late_msg.outcome is None  # the late one, kept
    _send(s, conn, 20.5)  # no rotation yet: that is due 11 s after the last one
    conn.receive_data(serialize(_answer(late)), 20.8)  # within its 10 s: still routed
    assert conn.events() == [] and late_msg.outcome == MessageDelivered(late_msg.message_id)
    assert conn.routing_entries == 1  # the one sent at 20.5, never answered
    for now in (31.0, 43.0, 55.0):  # timers only: the generations rotate out
        conn.on_timer(now)
    assert conn.routing_entries == 0
