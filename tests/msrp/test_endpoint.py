"""gw.msrp.endpoint over real loopback sockets (TCP and TLS), OS-picked ports only."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

from gw.msrp.endpoint import Link, MsrpEndpoint, MsrpSessionError, Session
from gw.msrp.events import (
    MessageDelivered,
    MessageFailed,
    MessageReceived,
    ReportIgnored,
    SessionClosed,
    SessionEvent,
)
from gw.msrp.frame import Frame, FrameParser, FrameReceived, serialize
from gw.msrp.uri import MsrpUri, parse_msrp_uri

RAW_PEER = parse_msrp_uri("msrp://127.0.0.1:9/rawpeer;tcp")  # the raw-socket peer's URI


@pytest.fixture(scope="module")
def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture(params=["tcp", "tls"])
async def pair(
    request: pytest.FixtureRequest, tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[tuple[MsrpEndpoint, MsrpEndpoint]]:
    kw: dict[str, Any] = {}
    if request.param == "tls":
        kw = {"ssl_server": tls_contexts[0], "ssl_client": tls_contexts[1]}
    a, b = MsrpEndpoint(**kw), MsrpEndpoint(**kw)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


@pytest.fixture
async def server() -> AsyncIterator[MsrpEndpoint]:
    ep = MsrpEndpoint()
    await ep.start()
    yield ep
    await ep.close()


async def connected(a: MsrpEndpoint, b: MsrpEndpoint, **kw: Any) -> tuple[Session, Session]:
    """A offers and is active; B answers and is passive (RFC 4975 §5.4 default)."""
    la, lb = a.new_local_uri(), b.new_local_uri()
    sb = b.create_session([la], local_uri=lb, role="passive", **kw)
    sa = a.create_session([lb], local_uri=la, role="active", **kw)
    await asyncio.wait_for(asyncio.gather(sa.connect(5.0), sb.connect(5.0)), 10.0)
    return sa, sb


async def received(s: Session, timeout: float = 10.0) -> MessageReceived:
    while True:
        event = await asyncio.wait_for(s.next_event(), timeout)
        if isinstance(event, MessageReceived):
            return event


@contextlib.asynccontextmanager
async def raw_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[tuple[int, MsrpEndpoint]]:
    """A hand-driven peer listening on a free port, and an endpoint to reach it."""
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    ep = MsrpEndpoint()
    await ep.start()
    try:
        yield srv.sockets[0].getsockname()[1], ep
    finally:
        await ep.close()
        srv.close()


class RawPeer:
    """A hand-driven MSRP peer on a plain socket, for byte-level tests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.parser = FrameParser()
        self.frames: list[Frame] = []

    @classmethod
    async def open(cls, ep: MsrpEndpoint) -> RawPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", ep.uri.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def read_frame(self, timeout: float = 5.0) -> Frame:
        while not self.frames:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            assert data, "connection closed"
            self.frames += [e.frame for e in self.parser.feed(data) if isinstance(e, FrameReceived)]
        return self.frames.pop(0)

    def close(self) -> None:
        self.writer.close()


def raw_request(
    to: MsrpUri,
    tid: str,
    *,
    method: str = "SEND",
    frm: MsrpUri = RAW_PEER,
    mid: str = "rawmsg1",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    flag: str = "$",
) -> bytes:
    frame = Frame.request(
        method,
        [to],
        [frm],
        tid=tid,
        headers=[("Message-ID", mid), *(headers or [])],
        body=body,
        content_type="text/plain" if body else None,
        flag=flag,
    )
    return serialize(frame)


# --- two endpoints ----------------------------------------------------------------------


async def test_five_mib_message_arrives_intact_in_chunks(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    sa, sb = await connected(a, b)
    body = random.Random(7).randbytes(5 * 1024 * 1024)
    outcome, got = await asyncio.gather(sa.send(body, "application/octet-stream"), received(sb))
    assert outcome == MessageDelivered(outcome.message_id, True)
    assert got.body == body and got.message_id == outcome.message_id
    assert sa.core.chunk_size == 2048  # i.e. 2560 chunks went over the wire


async def test_a_message_queued_before_connect_is_the_first_send(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    """§5.4: the active side's first SEND may carry a body. Queued before the connection,
    the message binds the session at the passive side and arrives; no empty SEND precedes
    it (the passive side would see it as a SEND without a message)."""
    a, b = pair
    la, lb = a.new_local_uri(), b.new_local_uri()
    sb = b.create_session([la], local_uri=lb, role="passive")
    sa = a.create_session([lb], local_uri=la, role="active")
    pending = sa.send_nowait(b"hello first", "text/plain")
    await asyncio.wait_for(asyncio.gather(sa.connect(5.0), sb.connect(5.0)), 10.0)
    got = await received(sb)
    assert got.body == b"hello first" and got.message_id == pending.message_id
    outcome = await asyncio.wait_for(sa.outcome(pending), 5.0)
    assert isinstance(outcome, MessageDelivered)


async def test_the_first_frame_on_the_wire_is_the_queued_message() -> None:
    frames: asyncio.Queue[Frame] = asyncio.Queue()

    async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = FrameParser()
        while data := await reader.read(65536):
            for event in parser.feed(data):
                if isinstance(event, FrameReceived):
                    await frames.put(event.frame)

    async with raw_server(peer) as (port, ep):
        s = ep.create_session([f"msrp://127.0.0.1:{port}/raw;tcp"], role="active")
        s.send_nowait(b"hello first", "text/plain")
        await s.connect(5.0)  # nothing to wait for: the message is the binding SEND
        first = await asyncio.wait_for(frames.get(), 5.0)
        assert first.method == "SEND" and first.body == b"hello first"
        s.close()


async def test_passive_side_waits_and_connection_is_reused(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    la, lb = a.new_local_uri(), b.new_local_uri()
    sb = b.create_session([la], local_uri=lb, role="passive")
    waiting = asyncio.ensure_future(sb.connect(5.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    sa = a.create_session([lb], local_uri=la, role="active")
    await sa.connect(5.0)
    await asyncio.wait_for(waiting, 5.0)
    sa2, sb2 = await connected(a, b)
    assert sa.local_uri.secure == sb.local_uri.secure == (a.ssl_server is not None)
    assert len(a.connections) == 1 and len(b.connections) == 1
    assert sa.link is sa2.link and sb.link is sb2.link
    results = await asyncio.gather(
        sa.send(b"to one", "text/plain"),
        sa2.send(b"to two", "text/plain"),
        sb2.send(b"back from two", "text/plain"),
        received(sb),
        received(sb2),
        received(sa2),
    )
    assert all(isinstance(r, MessageDelivered) for r in results[:3])
    assert [r.body for r in results[3:]] == [b"to one", b"to two", b"back from two"]


async def test_success_report_round_trip(pair: tuple[MsrpEndpoint, MsrpEndpoint]) -> None:
    a, b = pair
    sa, sb = await connected(a, b)
    sending = asyncio.ensure_future(sa.send(b"confirm me", "text/plain", success_report=True))
    got = await received(sb)
    await asyncio.sleep(0.05)
    assert not sending.done()  # the 200 alone does not confirm delivery
    assert sb.report_success(got.message_id)
    assert await asyncio.wait_for(sending, 5.0) == MessageDelivered(got.message_id, True)


async def test_closing_last_session_closes_the_connection_we_opened(
    pair: tuple[MsrpEndpoint, MsrpEndpoint],
) -> None:
    a, b = pair
    sa, sb = await connected(a, b)
    link = sa.link
    assert link is not None
    sa.close()
    await asyncio.wait_for(link.lost, 5.0)
    events = [await asyncio.wait_for(sb.next_event(), 5.0)]
    assert isinstance(events[-1], SessionClosed)
    assert not a.connections


async def test_passive_connect_times_out() -> None:
    ep = MsrpEndpoint()
    await ep.start()
    try:
        s = ep.create_session([RAW_PEER], role="passive")
        with pytest.raises(TimeoutError):
            await s.connect(0.1)
    finally:
        await ep.close()


async def test_active_connect_to_nothing_fails() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    ep = MsrpEndpoint()
    await ep.start()
    try:
        s = ep.create_session([f"msrp://127.0.0.1:{port}/nobody;tcp"], role="active")
        with pytest.raises(MsrpSessionError) as info:
            await s.connect(2.0)
        assert info.value.code == 408
    finally:
        await ep.close()


async def test_lost_connection_fails_pending_messages() -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)  # reads nothing, answers nothing

    async with raw_server(silent) as (port, ep):
        # Nothing queued: connect() sends the empty SEND (§5.4) and waits for its answer.
        bare = ep.create_session([f"msrp://127.0.0.1:{port}/bare;tcp"], role="active")
        connecting = asyncio.ensure_future(bare.connect(5.0))
        writer = await asyncio.wait_for(accepted.get(), 5.0)
        await asyncio.sleep(0.05)
        writer.transport.abort()
        with pytest.raises(MsrpSessionError) as info:
            await connecting
        assert info.value.code == 408
        # A message queued first is the first SEND: connect() has nothing to wait for, and
        # the lost connection fails the message.
        s = ep.create_session([f"msrp://127.0.0.1:{port}/silent;tcp"], role="active")
        pending = s.send_nowait(b"never answered", "text/plain")
        await asyncio.wait_for(s.connect(5.0), 5.0)
        writer = await asyncio.wait_for(accepted.get(), 5.0)
        await asyncio.sleep(0.05)
        writer.transport.abort()
        outcome = await asyncio.wait_for(s.outcome(pending), 5.0)
        assert isinstance(outcome, MessageFailed) and outcome.code == 408
        events: list[SessionEvent] = []
        while not events or not isinstance(events[-1], SessionClosed):
            events.append(await asyncio.wait_for(s.next_event(), 5.0))
        later = await s.send(b"after", "text/plain")
        assert isinstance(later, MessageFailed) and later.code == 481


# --- raw sockets against one endpoint ---------------------------------------------------


async def test_slow_sender_one_byte_at_a_time(server: MsrpEndpoint) -> None:
    s = server.create_session([RAW_PEER], role="passive")
    peer = await RawPeer.open(server)
    body = b"slow but steady " * 4
    data = raw_request(s.local_uri, "slow0001", body=body)
    for i in range(len(data)):
        peer.writer.write(data[i : i + 1])
        await peer.writer.drain()
        await asyncio.sleep(0.002)
    resp = await peer.read_frame()
    assert (resp.tid, resp.status) == ("slow0001", 200)
    assert (await received(s)).body == body
    peer.close()


async def test_message_split_over_hundreds_of_reads(
    server: MsrpEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    original = Link.data_received

    def counting(self: Link, data: bytes) -> None:
        nonlocal reads
        reads += 1
        original(self, data)

    monkeypatch.setattr(Link, "data_received", counting)
    s = server.create_session([RAW_PEER], role="passive")
    peer = await RawPeer.open(server)
    body = random.Random(9).randbytes(30_000)
    stream = b"".join(
        raw_request(
            s.local_uri,
            f"part{i:04d}",
            body=body[off : off + 10_000],
            headers=[("Byte-Range", f"{off + 1}-{off + 10_000}/30000")],
            flag="$" if off == 20_000 else "+",
        )
        for i, off in enumerate(range(0, 30_000, 10_000))
    )
    for i in range(0, len(stream), 100):
        peer.writer.write(stream[i : i + 100])
        await peer.writer.drain()
        await asyncio.sleep(0.0005)
    assert (await received(s)).body == body
    assert [(await peer.read_frame()).status for _ in range(3)] == [200, 200, 200]
    assert reads >= 200
    peer.close()


async def test_report_over_the_wire_gets_no_response(server: MsrpEndpoint) -> None:
    s = server.create_session([RAW_PEER], role="passive")
    peer = await RawPeer.open(server)
    peer.writer.write(raw_request(s.local_uri, "bind0001", mid="empty001"))
    assert (await peer.read_frame()).tid == "bind0001"
    report = [("Status", "000 200 OK"), ("Byte-Range", "1-5/5")]
    other = server.new_local_uri()
    peer.writer.write(raw_request(s.local_uri, "rep00001", method="REPORT", headers=report))
    peer.writer.write(raw_request(other, "rep00002", method="REPORT", headers=report))
    peer.writer.write(raw_request(s.local_uri, "probe001", mid="empty002"))
    resp = await peer.read_frame()
    assert (resp.tid, resp.status) == ("probe001", 200)  # nothing came back for the REPORTs
    event = await asyncio.wait_for(s.next_event(), 5.0)
    assert isinstance(event, ReportIgnored) and event.message_id == "rawmsg1"
    assert server.stats["rejected_481"] == 1
    peer.close()


async def test_send_from_wrong_from_path_gets_481(server: MsrpEndpoint) -> None:
    s = server.create_session([RAW_PEER], role="passive")
    peer = await RawPeer.open(server)
    impostor = parse_msrp_uri("msrp://127.0.0.1:9/impostor;tcp")
    peer.writer.write(raw_request(s.local_uri, "evil0001", frm=impostor, body=b"hi"))
    resp = await peer.read_frame()
    assert (resp.tid, resp.status) == ("evil0001", 481)
    assert s.core.connection is None
    peer.writer.write(raw_request(s.local_uri, "good0001", body=b"hi"))
    assert (await peer.read_frame()).status == 200
    assert (await received(s)).body == b"hi"
    peer.close()


async def test_connection_without_valid_request_is_closed_after_idle_timeout() -> None:
    ep = MsrpEndpoint(idle_timeout=0.3)
    await ep.start()
    try:
        silent, lost = await RawPeer.open(ep), await RawPeer.open(ep)
        lost.writer.write(raw_request(ep.new_local_uri(), "lost0001"))  # unknown session
        assert (await lost.read_frame()).status == 481
        for peer in (silent, lost):
            assert await asyncio.wait_for(peer.reader.read(), 5.0) == b""  # closed by us
            peer.close()
    finally:
        await ep.close()


async def test_garbage_closes_the_connection(server: MsrpEndpoint) -> None:
    peer = await RawPeer.open(server)
    peer.writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert await asyncio.wait_for(peer.reader.read(), 5.0) == b""
    peer.close()
