"""Our RFC 4976 client against a real relay: Kamailio's msrp module (tests/msrp/kamailio/).

Kamailio runs in the foreground on a free port with a config written per test
module; see tests/support/kamailio.py.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gw.msrp.chunks import Reassembler, parse_byte_range, split_message
from gw.msrp.frame import Frame, FrameParser, FrameReceived, make_response, serialize
from gw.msrp.relay import (
    Authenticated,
    RelayAuthError,
    RelayClient,
    RelayEvent,
)
from gw.msrp.uri import MsrpUri, new_session_id
from tests.support.kamailio import MsrpRelay, require_kamailio
from tests.support.relay_link import RelayLink, connect_relay

pytestmark = pytest.mark.interop

USERS = {"alice": "wonder-land", "bob": "b0b.s3cret"}


def local_uri(port: int = 40000) -> MsrpUri:
    """Our URI as advertised; nothing listens there: the relay reaches us over our AUTH link."""
    return MsrpUri(host="127.0.0.1", port=port, session_id=new_session_id())


@pytest.fixture(scope="module")
def relay() -> Iterator[MsrpRelay]:
    require_kamailio()
    with MsrpRelay(USERS, min_expires=1, max_expires=3600, grace=1) as r:
        yield r


class Wire:
    """A RelayClient driven by hand over a socket, recording every frame both ways."""

    def __init__(
        self, client: RelayClient, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ):
        self.client = client
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.sent: list[Frame] = []
        self.received: list[Frame] = []
        self.pending: deque[Frame] = deque()

    @classmethod
    async def open(cls, relay: MsrpRelay, client: RelayClient) -> Wire:
        reader, writer = await asyncio.open_connection(relay.host, relay.port())
        return cls(client, reader, writer)

    def flush(self) -> None:
        for frame in self.client.frames_to_send():
            self.sent.append(frame)
            self.writer.write(serialize(frame))

    async def frame(self, timeout: float = 5.0) -> Frame:
        async with asyncio.timeout(timeout):
            while not self.pending:
                data = await self.reader.read(65536)
                assert data, "relay closed the connection"
                for ev in self.parser.feed(data):
                    assert isinstance(ev, FrameReceived), ev
                    self.received.append(ev.frame)
                    self.pending.append(ev.frame)
        return self.pending.popleft()

    async def run_until_event(self, now: float = 0.0) -> list[RelayEvent]:
        """Feed relay answers to the client until it reports something."""
        self.flush()
        while True:
            events = self.client.receive(await self.frame(), now)
            self.flush()
            if events:
                return events

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


@pytest.fixture
async def wires() -> AsyncIterator[list[Wire]]:
    opened: list[Wire] = []
    yield opened
    for w in opened:
        await w.close()


def test_config_checks(relay: MsrpRelay) -> None:
    result = relay.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr


async def test_digest_auth_401_then_200(relay: MsrpRelay, wires: list[Wire]) -> None:
    me = local_uri()
    wire = await Wire.open(relay, RelayClient(relay.uri, me, "alice", USERS["alice"], 120))
    wires.append(wire)
    wire.client.start(0.0)
    [ev] = await wire.run_until_event()

    first, second = wire.sent
    challenge, grant = wire.received
    assert first.header("Authorization") is None
    assert challenge.tid == first.tid and challenge.status == 401
    www = challenge.header("WWW-Authenticate") or ""
    assert www.startswith("Digest ") and f'realm="{relay.realm}"' in www and 'qop="auth"' in www
    auth = second.header("Authorization") or ""
    assert f'uri="{relay.uri}"' in auth and "nc=00000001" in auth and "qop=auth" in auth
    assert grant.tid == second.tid and grant.status == 200
    assert grant.header("Expires") == "120"

    assert isinstance(ev, Authenticated) and ev.expires == 120
    [use] = ev.use_path
    assert (use.host, use.port, use.transport) == (relay.host, relay.port(), "tcp")
    assert use.session_id
    assert ev.path == (use, me)
    assert [str(u) for u in wire.client.path()] == [str(use), str(me)]


@pytest.mark.parametrize(("user", "password"), [("alice", "not-it"), ("mallory", "whatever")])
async def test_wrong_credentials_fail(relay: MsrpRelay, user: str, password: str) -> None:
    client = RelayClient(relay.uri, local_uri(), user, password, 60)
    with pytest.raises(RelayAuthError) as info:
        await connect_relay(client, timeout=5)
    assert info.value.event.status == 403
    assert not info.value.event.was_authenticated


async def test_expires_below_minimum_is_raised_by_423(wires: list[Wire]) -> None:
    require_kamailio()
    with MsrpRelay(USERS, min_expires=30, max_expires=60) as strict:
        wire = await Wire.open(strict, RelayClient(strict.uri, local_uri(), "bob", USERS["bob"], 5))
        wires.append(wire)
        wire.client.start(0.0)
        [ev] = await wire.run_until_event()
        assert [f.status for f in wire.received] == [401, 423, 200]
        assert wire.received[1].header("Min-Expires") == "30"
        assert wire.sent[-1].header("Expires") == "30"
        assert isinstance(ev, Authenticated) and ev.expires == 30


async def test_refresh_keeps_the_binding(relay: MsrpRelay) -> None:
    """Expires 2 s: the link re-AUTHs at 80 % in one round trip (nonce reused, nc=2),
    the Use-Path stays, and the relay still delivers to us long after the first grant
    (plus its grace) would have run out."""
    inbound: list[Frame] = []
    events: list[RelayEvent] = []
    me = local_uri()
    alice = RelayClient(relay.uri, me, "alice", USERS["alice"], 2)
    link = await connect_relay(alice, on_frame=inbound.append, on_event=events.append, timeout=5)
    bob = await connect_relay(RelayClient(relay.uri, local_uri(), "bob", USERS["bob"], 60))
    try:
        first_path = link.path()
        for _ in range(3):
            ev = await asyncio.wait_for(link.next_event(), 5)
            assert isinstance(ev, Authenticated) and ev.refresh and not ev.path_changed
        assert link.path() == first_path
        assert all(isinstance(e, Authenticated) for e in events)

        # ~4.8 s after the first grant (2 s + 1 s grace): only the refreshes keep it alive
        send = Frame.request(
            "SEND",
            bob.client.outbound_to_path(link.path()),
            [bob.client.our_uri],
            headers=[("Message-ID", "refresh-1"), ("Byte-Range", "1-5/5")],
            body=b"still",
            content_type="text/plain",
        )
        bob.send(send)
        await _until(lambda: any(f.method == "SEND" for f in inbound))
        [got] = [f for f in inbound if f.method == "SEND"]
        assert got.body == b"still"
    finally:
        await link.close()
        await bob.close()


async def test_binding_lapses_without_refresh(relay: MsrpRelay, wires: list[Wire]) -> None:
    """Control for the test above: a client that never refreshes loses delivery (481)."""
    me = local_uri()
    wire = await Wire.open(relay, RelayClient(relay.uri, me, "alice", USERS["alice"], 1))
    wires.append(wire)
    wire.client.start(0.0)
    [ev] = await wire.run_until_event()
    assert isinstance(ev, Authenticated)
    path = wire.client.path()
    await asyncio.sleep(3.5)  # 1 s + 1 s grace + htable timer granularity

    answers: list[Frame] = []
    bob_link = await connect_relay(
        RelayClient(relay.uri, local_uri(), "bob", USERS["bob"], 60), on_frame=answers.append
    )
    try:
        # bob's own relay hop answers 200 and forwards; the second hop (alice's
        # expired session) refuses: nothing reaches alice.
        send = Frame.request(
            "SEND",
            bob_link.client.outbound_to_path(path),
            [bob_link.client.our_uri],
            headers=[("Message-ID", "lapsed"), ("Byte-Range", "1-1/1")],
            body=b"x",
            content_type="text/plain",
        )
        bob_link.send(send)
        await _until(lambda: any(f.tid == send.tid for f in answers))
        assert [f.status for f in answers if f.tid == send.tid] == [200]
        assert not await _readable(wire, 0.5)
        assert "cannot deliver" not in relay.log_text()  # refused before, by the lookup
    finally:
        await bob_link.close()


async def test_refresh_survives_stale_nonce(wires: list[Wire]) -> None:
    """nonce_expire 1 s: the preemptive refresh gets 401 stale=true and is answered."""
    require_kamailio()
    with MsrpRelay(USERS, nonce_expire=1, min_expires=1) as short:
        clock = [0.0]
        wire = await Wire.open(short, RelayClient(short.uri, local_uri(), "bob", USERS["bob"], 3))
        wires.append(wire)
        wire.client.start(clock[0])
        [ev] = await wire.run_until_event()
        assert isinstance(ev, Authenticated)
        await asyncio.sleep(2.5)  # past 80 % of 3 s and past the nonce's life
        deadline = wire.client.next_refresh(0.0)
        assert deadline is not None
        wire.client.on_timer(deadline)
        [ev] = await wire.run_until_event(deadline)
        assert isinstance(ev, Authenticated) and ev.refresh
        refresh_status = [f.status for f in wire.received[2:]]
        assert refresh_status == [401, 200]
        assert "stale=true" in (wire.received[2].header("WWW-Authenticate") or "").lower()


async def test_chunked_messages_through_the_relay(relay: MsrpRelay) -> None:
    """Two authenticated clients exchange chunked SENDs through Kamailio (two relay hops:
    sender's session, then receiver's) using only RelayLink and the sans-I/O pieces."""
    got: dict[str, list[Frame]] = {"alice": [], "bob": []}
    links: dict[str, RelayLink] = {}

    def receiver(name: str) -> Callable[[Frame], None]:
        def on_frame(frame: Frame) -> None:
            got[name].append(frame)
            if frame.method == "SEND":
                links[name].send(make_response(frame, 200, responder=links[name].client.our_uri))

        return on_frame

    for name, port in (("alice", 40001), ("bob", 40002)):
        client = RelayClient(relay.uri, local_uri(port), name, USERS[name], 300)
        links[name] = await connect_relay(client, on_frame=receiver(name), timeout=5)
    alice, bob = links["alice"], links["bob"]
    try:
        big = bytes(i % 251 for i in range(50 * 1024))
        messages = {
            "big": big,
            "s1": b"hello",
            "s2": "h\u00e9llo w\u00f6rld".encode(),
            "s3": b"-" * 7,
        }
        for mid, body in messages.items():
            for chunk in split_message(body, 2048):
                alice.send(
                    Frame.request(
                        "SEND",
                        alice.client.outbound_to_path(bob.path()),
                        [alice.client.our_uri],
                        headers=[("Message-ID", mid), ("Byte-Range", str(chunk.byte_range))],
                        body=bytes(chunk.data),
                        content_type="text/plain",
                        flag=chunk.flag,
                    )
                )
        await alice.drain()
        n_chunks = 25 + 3
        await _until(lambda: len([f for f in got["bob"] if f.method == "SEND"]) >= n_chunks)

        sends = [f for f in got["bob"] if f.method == "SEND"]
        assert len(sends) == n_chunks
        reasm = Reassembler()
        done = {}
        for f in sends:
            # what RFC 4976 says bob sees: To-Path is bob only, From-Path lists
            # bob's relay, then alice's relay, then alice
            assert f.to_path == (bob.client.our_uri,)
            assert f.from_path == (
                *bob.client.use_path,
                *alice.client.use_path,
                alice.client.our_uri,
            )
            br = parse_byte_range(f.header("Byte-Range") or "")
            assert br is not None
            res = reasm.add(
                f.message_id or "", br, f.body, f.flag, f.content_type, time.monotonic()
            )
            assert res.status == 200
            if res.completed:
                done[res.completed.message_id] = res.completed.body
        assert done == messages
        # alice got one hop-by-hop 200 per chunk from her relay
        await _until(lambda: len([f for f in got["alice"] if f.status == 200]) >= n_chunks)
    finally:
        await alice.close()
        await bob.close()


async def test_oversized_frame_is_refused_and_the_link_survives(relay: MsrpRelay) -> None:
    """Kamailio 5.6.3 refuses big frames (measured: a SEND frame of 11 238 bytes passes
    two hops here, 11 239 gets 501), so chunks must stay small (2048 default). The
    refusal is an answer, not a dropped connection."""
    got: list[Frame] = []
    answers: list[Frame] = []
    alice = await connect_relay(
        RelayClient(relay.uri, local_uri(), "alice", USERS["alice"], 60), on_frame=answers.append
    )
    bob = await connect_relay(
        RelayClient(relay.uri, local_uri(), "bob", USERS["bob"], 60), on_frame=got.append
    )

    def send(mid: str, body: bytes) -> Frame:
        frame = Frame.request(
            "SEND",
            alice.client.outbound_to_path(bob.path()),
            [alice.client.our_uri],
            headers=[("Message-ID", mid), ("Byte-Range", f"1-{len(body)}/{len(body)}")],
            body=body,
            content_type="text/plain",
        )
        alice.send(frame)
        return frame

    try:
        big = send("big1", b"x" * 12000)
        await _until(lambda: any(f.tid == big.tid for f in answers))
        assert [f.status for f in answers if f.tid == big.tid] == [501]
        small = send("small1", b"fits")
        await _until(lambda: any(f.method == "SEND" for f in got))
        assert [f.body for f in got if f.method == "SEND"] == [b"fits"]
        assert [f.status for f in answers if f.tid == small.tid] == [200]
        assert not alice.closed
    finally:
        await alice.close()
        await bob.close()


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def _readable(wire: Wire, timeout: float) -> bool:
    try:
        data = await asyncio.wait_for(wire.reader.read(65536), timeout)
    except TimeoutError:
        return False
    return bool(data)


def test_relay_holds_its_port(relay: MsrpRelay) -> None:
    """The helper's port came from the OS and Kamailio holds it."""
    with socket.socket() as s, pytest.raises(OSError):
        s.bind((relay.host, relay.port()))
