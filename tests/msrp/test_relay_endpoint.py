"""RFC 4976 relays as an `MsrpEndpoint` feature (`use_relay`), and the connection-core
hooks it rests on: `response_hook`, `queue_frame`, `keep_open`.

The core tests are sans-I/O; the endpoint tests talk through a real Kamailio relay.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from gw.msrp.connection import MsrpConnection, SessionTable
from gw.msrp.endpoint import MsrpEndpoint, MsrpSessionError, Session
from gw.msrp.events import (
    MessageDelivered,
    MessageReceived,
    RequestRejected,
    SessionClosed,
    SessionEvent,
    UnmatchedResponse,
)
from gw.msrp.frame import Frame, FrameError, FrameParser, FrameReceived, serialize
from gw.msrp.relay import Authenticated, AuthFailed, RelayAuthError, RelayEvent
from gw.msrp.session import MsrpSession
from gw.msrp.uri import MsrpUri, parse_msrp_uri
from tests.support.kamailio import MsrpRelay, require_kamailio

USERS = {"alice": "wonder-land", "bob": "b0b.s3cret"}
A = parse_msrp_uri("msrp://a.example:2855/sessA;tcp")
B = parse_msrp_uri("msrp://b.example:2856/sessB;tcp")
RELAY = parse_msrp_uri("msrp://relay.example:2855;tcp")


# -- connection core: response_hook, queue_frame, keep_open ---------------------------


def _auth(tid: str = "auth1") -> Frame:
    return Frame.request("AUTH", [RELAY], [A], tid=tid)


def _outbound(**kw: object) -> tuple[MsrpSession, MsrpConnection, list[Frame | FrameError]]:
    claimed: list[Frame | FrameError] = []

    def hook(item: Frame | FrameError) -> bool:
        if item.tid == "auth1":
            claimed.append(item)
            return True
        return False

    table = SessionTable()
    session = MsrpSession(A, [B], chunk_size=100)
    table.add(session)
    conn = MsrpConnection(table, now=0.0, outbound=True, response_hook=hook, **kw)  # type: ignore[arg-type]
    conn.attach(session, 0.0)
    return session, conn, claimed


def _ok(tid: str) -> bytes:
    return serialize(Frame(tid, None, 200, "OK", [("To-Path", str(A)), ("From-Path", str(B))]))


def test_response_hook_claims_responses_no_session_owns() -> None:
    _, conn, claimed = _outbound()
    (empty,) = FrameParser().feed(conn.data_to_send(0.0))
    assert isinstance(empty, FrameReceived)
    ok, auth_ok, stray = (_ok(tid) for tid in (empty.frame.tid, "auth1", "stray9"))
    conn.receive_data(ok + auth_ok + stray, 0.1)
    assert [type(c) for c in claimed] == [Frame] and claimed[0].tid == "auth1"
    assert conn.events() == [UnmatchedResponse("stray9", 200)]  # the session's 200 was routed
    # an unreadable answer to our AUTH is claimed too, instead of a RequestRejected
    conn.receive_data(b"MSRP auth1 200 OK\r\nTo-Path: not a uri\r\n-------auth1$\r\n", 0.2)
    assert isinstance(claimed[-1], FrameError) and claimed[-1].tid == "auth1"
    assert conn.events() == []
    conn.receive_data(b"MSRP stray8 200 OK\r\nTo-Path: not a uri\r\n-------stray8$\r\n", 0.3)
    assert [type(e) for e in conn.events()] == [RequestRejected]
    assert not conn.closed


def test_queue_frame_goes_out_between_whole_frames() -> None:
    session, conn, _ = _outbound()
    session.send_message(b"x" * 1000, "text/plain", now=0.0)
    conn.wake(session)
    first = conn.frames_to_send(0.0, max_bytes=600)  # part of the chunks only
    conn.queue_frame(_auth())
    rest = conn.data_to_send(0.0)
    frames = [e.frame for e in FrameParser().feed(rest) if isinstance(e, FrameReceived)]
    assert frames[0].method == "AUTH" and frames[0].tid == "auth1"
    assert len(first) + len(frames) == 1 + 10 + 1  # empty SEND, 10 chunks, AUTH
    with pytest.raises(ValueError):
        conn.queue_frame(Frame("bad tid", "AUTH"))
    conn.close("bye")
    conn.queue_frame(_auth("auth2"))
    assert conn.data_to_send(0.0) == b""


def test_keep_open_connection_outlives_idle_timeout_until_cleared() -> None:
    conn = MsrpConnection(SessionTable(), now=0.0, outbound=True, idle_timeout=1.0, keep_open=True)
    assert conn.next_deadline() is None
    conn.on_timer(50.0)
    assert not conn.closed
    conn.keep_open = False
    assert conn.next_deadline() == 1.0  # idle since it was opened
    conn.on_timer(50.0)
    assert conn.closed


# -- endpoint through Kamailio ---------------------------------------------------------


@pytest.fixture(scope="module")
def relay() -> Iterator[MsrpRelay]:
    require_kamailio()
    with MsrpRelay(USERS, min_expires=1, grace=1) as r:
        yield r


class Side:
    def __init__(self, endpoint: MsrpEndpoint) -> None:
        self.endpoint = endpoint
        self.relay_events: list[RelayEvent] = []
        self.events: list[SessionEvent] = []
        self.received: asyncio.Queue[MessageReceived] = asyncio.Queue()

    def on_event(self, event: SessionEvent) -> None:
        self.events.append(event)
        if isinstance(event, MessageReceived):
            self.received.put_nowait(event)

    def session(self, local: MsrpUri, peer_path: tuple[MsrpUri, ...]) -> Session:
        # RFC 4976: each side connects to its own relay, so both are active
        return self.endpoint.create_session(peer_path, local_uri=local, on_event=self.on_event)


@pytest.fixture
async def sides(relay: MsrpRelay) -> AsyncIterator[tuple[Side, Side]]:
    made: list[Side] = []
    try:
        for name in ("alice", "bob"):
            endpoint = MsrpEndpoint("127.0.0.1", 0, idle_timeout=0.5)  # relay link must outlive it
            await endpoint.start()
            side = Side(endpoint)
            made.append(side)
            use_path = await endpoint.use_relay(
                relay.uri, name, USERS[name], expires=2, on_event=side.relay_events.append
            )
            assert use_path and use_path == list(endpoint.use_path)
        yield made[0], made[1]
    finally:
        links = [s.endpoint.relay_link for s in made]
        for side in made:
            await side.endpoint.close()
        assert all(link is None or link.lost.done() for link in links)  # close() closes it


async def _connected_pair(alice: Side, bob: Side) -> tuple[Session, Session]:
    a_local, b_local = alice.endpoint.new_local_uri(), bob.endpoint.new_local_uri()
    a_path, b_path = alice.endpoint.local_path(a_local), bob.endpoint.local_path(b_local)
    assert a_path == (*alice.endpoint.use_path, a_local) and len(a_path) == 2
    a_sess, b_sess = alice.session(a_local, b_path), bob.session(b_local, a_path)
    assert a_sess.relayed and a_sess.local_path == a_path and a_sess.peer_path == b_path
    await b_sess.connect(timeout=10)
    await a_sess.connect(timeout=10)
    return a_sess, b_sess


@pytest.mark.interop
async def test_chunked_messages_between_two_endpoints_via_relay(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    a_sess, b_sess = await _connected_pair(alice, bob)
    assert a_sess.link is alice.endpoint.relay_link and b_sess.link is bob.endpoint.relay_link
    assert len(alice.endpoint.connections) == 1  # no fresh unauthenticated connection

    big = bytes(i % 253 for i in range(50 * 1024))
    small = [b"hi", "gr\u00fc\u00df dich".encode(), b"-------" + b"x" * 10]
    outcomes = await asyncio.gather(
        a_sess.send(big, "application/octet-stream"),
        *(a_sess.send(m, "text/plain") for m in small),
    )
    assert all(isinstance(o, MessageDelivered) for o in outcomes), outcomes
    got = [await asyncio.wait_for(bob.received.get(), 10) for _ in range(4)]
    assert sorted(m.body for m in got) == sorted([big, *small])
    assert {m.body: m for m in got}[big].content_type == "application/octet-stream"

    reply = await b_sess.send(b"ack " * 3000, "text/plain")  # 12 000 bytes: 6 chunks
    assert isinstance(reply, MessageDelivered)
    assert (await asyncio.wait_for(alice.received.get(), 10)).body == b"ack " * 3000

    # Expires 2 s: refreshed in the background, path unchanged; idle timeout 0.5 s ignored
    await asyncio.sleep(2.0)
    for side, sess in ((alice, a_sess), (bob, b_sess)):
        refreshes = [e for e in side.relay_events if isinstance(e, Authenticated) and e.refresh]
        assert refreshes and not any(e.path_changed for e in refreshes)
        assert side.endpoint.local_path(sess.local_uri) == sess.local_path
        assert side.endpoint.stats["unmatched_responses"] == 0  # AUTH answers were claimed
    late = await a_sess.send(b"after refresh", "text/plain")
    assert isinstance(late, MessageDelivered)
    assert (await asyncio.wait_for(bob.received.get(), 10)).body == b"after refresh"

    # the relay link outlives its last session, and carries the next ones
    link = alice.endpoint.relay_link
    a_sess.close()
    b_sess.close()
    await asyncio.sleep(0.7)
    assert link is not None and link.keep_open and not link.lost.done()
    a2, b2 = await _connected_pair(alice, bob)
    assert a2.link is link
    assert isinstance(await b2.send(b"again", "text/plain"), MessageDelivered)
    assert (await asyncio.wait_for(alice.received.get(), 10)).body == b"again"


@pytest.mark.interop
async def test_wrong_password_fails_and_leaves_no_relay(relay: MsrpRelay) -> None:
    endpoint = MsrpEndpoint()
    await endpoint.start()
    try:
        with pytest.raises(RelayAuthError) as info:
            await endpoint.use_relay(relay.uri, "alice", "not-her-password", timeout=5)
        assert info.value.event.status == 403  # Kamailio refuses bad credentials with 403
        assert endpoint.relay is None and endpoint.use_path == ()
        await asyncio.sleep(0.1)
        assert endpoint.connections == []
        with pytest.raises(ValueError):
            endpoint.create_session(A, via_relay=True)
        assert endpoint.create_session(A).peer_path == (A,)  # direct, as without relay
    finally:
        await endpoint.close()


@pytest.mark.interop
async def test_lost_relay_link_ends_sessions_until_use_relay_again(
    sides: tuple[Side, Side],
) -> None:
    alice, bob = sides
    a_sess, _ = await _connected_pair(alice, bob)
    link = alice.endpoint.relay_link
    assert link is not None and link.transport is not None
    link.transport.abort()
    await asyncio.wait_for(link.lost, 5)
    failed = [e for e in alice.relay_events if isinstance(e, AuthFailed)]
    assert failed and failed[-1].was_authenticated
    assert a_sess.closed and isinstance(alice.events[-1], SessionClosed)
    with pytest.raises(MsrpSessionError) as info:
        alice.endpoint.create_session(B)
    assert info.value.code == 503
    assert alice.endpoint.create_session(B, via_relay=False).local_path[0].host == "127.0.0.1"

    await alice.endpoint.use_relay(relay_uri(bob), "alice", USERS["alice"], expires=2)
    assert alice.endpoint.relay_link is not link
    a2, _ = await _connected_pair(alice, bob)
    assert isinstance(await a2.send(b"back", "text/plain"), MessageDelivered)
    assert (await asyncio.wait_for(bob.received.get(), 10)).body == b"back"


def relay_uri(side: Side) -> MsrpUri:
    client = side.endpoint.relay
    assert client is not None
    return client.relay_uri
