"""`MsrpEndpoint.use_relay` through Kamailio's msrp relay over TLS (msrps) and TCP, and the
From-Path a relayed session receives.

RFC 4975 §7.3 with RFC 4976: a request reaching us through relays carries a From-Path
of every relay it crossed, then the sender's URI. Each relay puts first the URI it gave
out in Use-Path, so what arrives is exactly the session's peer path as our core stores
it: our relay's Use-Path + the peer's SDP a=path. These tests record every SEND as it
arrives on the wire (the endpoint's tracer, after TLS) and compare its From-Path with
the session's `core.peer_path`, URI by URI with the §6.1 rules and as text.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from gw.msrp.endpoint import MsrpEndpoint, Session
from gw.msrp.events import MessageDelivered, MessageReceived, SessionEvent
from gw.msrp.frame import Frame, FrameParser, FrameReceived
from gw.msrp.relay import RelayAuthError
from gw.msrp.uri import MsrpUri
from tests.support.kamailio import MsrpRelay, require_kamailio, require_kamailio_tls

pytestmark = pytest.mark.interop

USERS = {"gw": "gw-s3cret", "user": "us3r.pw"}


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module", params=["tls", "tcp"])
def relay(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[MsrpRelay]:
    if request.param == "tls":
        require_kamailio_tls()
    else:
        require_kamailio()
    with MsrpRelay(USERS, grace=1, tls=ca if request.param == "tls" else None) as r:
        yield r


class Peer:
    """An endpoint (msrps: when the relay is) that records SENDs as they arrive."""

    def __init__(self, endpoint: MsrpEndpoint) -> None:
        self.endpoint = endpoint
        self.sends: list[Frame] = []
        self.received: asyncio.Queue[MessageReceived] = asyncio.Queue()
        self._parsers: dict[Any, FrameParser] = {}
        endpoint.tracer = self._trace

    def _trace(self, direction: str, data: bytes, peer: Any) -> None:
        if direction != "in":
            return
        parser = self._parsers.setdefault(peer, FrameParser())
        for ev in parser.feed(data):
            if isinstance(ev, FrameReceived) and ev.frame.method == "SEND":
                self.sends.append(ev.frame)

    def on_event(self, event: SessionEvent) -> None:
        if isinstance(event, MessageReceived):
            self.received.put_nowait(event)

    def session(self, local: MsrpUri, peer_path: tuple[MsrpUri, ...], role: str) -> Session:
        return self.endpoint.create_session(
            peer_path, local_uri=local, role=role, on_event=self.on_event
        )


def contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@pytest.fixture
async def peers(relay: MsrpRelay, ca: trustme.CA) -> AsyncIterator[tuple[Peer, Peer]]:
    """`gw`: relayed, as a gateway node with msrp.relay; `user`: direct, not relayed."""
    server, client = contexts(ca) if relay.tls else (None, None)
    made = []
    for _ in range(2):
        endpoint = MsrpEndpoint("127.0.0.1", 0, ssl_server=server, ssl_client=client)
        await endpoint.start()
        made.append(Peer(endpoint))
    gw, user = made
    try:
        await gw.endpoint.use_relay(relay.uri, "gw", USERS["gw"], 60, timeout=5)
        yield gw, user
    finally:
        for peer in made:
            await peer.endpoint.close()


def assert_from_path_is_peer_path(frame: Frame, session: Session) -> None:
    """The rule the whole-path check applies (RFC 4975 §7.3, §6.1 URI comparison)."""
    expected = session.core.peer_path
    got = frame.from_path
    assert [str(u) for u in got] == [str(u) for u in expected], (got, expected)
    assert len(got) == len(expected) and all(
        g.matches(e) for g, e in zip(got, expected, strict=False)
    )
    assert frame.to_path == (session.local_uri,)


TLS_ONLY = pytest.mark.parametrize("relay", ["tls"], indirect=True)


@TLS_ONLY
def test_tls_relay_config_checks(relay: MsrpRelay) -> None:
    result = relay.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config file ok" in result.stdout + result.stderr


@TLS_ONLY
async def test_auth_over_tls_grants_an_msrps_use_path(relay: MsrpRelay, ca: trustme.CA) -> None:
    _, client = contexts(ca)
    endpoint = MsrpEndpoint("127.0.0.1", 0, ssl_client=client)
    await endpoint.start()
    try:
        [use] = await endpoint.use_relay(relay.uri, "gw", USERS["gw"], 60, timeout=5)
        assert (use.scheme, use.host, use.port, use.transport) == (
            "msrps",
            relay.host,
            relay.port(),
            "tcp",
        )
        link = endpoint.relay_link
        assert link is not None and link.transport is not None
        assert link.transport.get_extra_info("ssl_object") is not None, "AUTH went over TLS"
        local = endpoint.new_local_uri()
        assert endpoint.local_path(local) == (use, local)
    finally:
        await endpoint.close()


@TLS_ONLY
async def test_tls_relay_refuses_plain_tcp(relay: MsrpRelay) -> None:
    """The msrps relay listens on TLS only: it drops a plain AUTH without an answer."""
    endpoint = MsrpEndpoint("127.0.0.1", 0)
    await endpoint.start()
    try:
        plain = MsrpUri(host=relay.host, port=relay.port())
        with pytest.raises(RelayAuthError) as info:
            await endpoint.use_relay(plain, "gw", USERS["gw"], 60, timeout=5)
        assert info.value.event.status is None  # the connection was closed, no MSRP answer
        assert endpoint.relay is None
    finally:
        await endpoint.close()


async def test_relayed_session_gets_its_peer_path_as_from_path(
    peers: tuple[Peer, Peer],
) -> None:
    """Both set-up directions between a relayed side (`gw`) and a direct one (`user`):

    - gw active (it offered, user answered passive): gw sends over its relay link to
      Use-Path + user; the relay opens a connection to the user (TLS for msrps);
    - user active (user offered, gw answered passive): user connects to gw's relay
      itself and sends to Use-Path + gw; the relay delivers over gw's AUTH link.

    Every SEND at gw has From-Path = [gw's Use-Path, user] = gw's core peer path, and
    at the user [gw's Use-Path, gw] = the a=path gw advertised."""
    gw, user = peers
    for gw_role, user_role in (("active", "passive"), ("passive", "active")):
        g_local, u_local = gw.endpoint.new_local_uri(), user.endpoint.new_local_uri()
        g_path = gw.endpoint.local_path(g_local)  # what gw's SDP a=path says
        assert g_path == (*gw.endpoint.use_path, g_local) and len(g_path) == 2
        g_sess = gw.session(g_local, (u_local,), gw_role)
        u_sess = user.session(u_local, g_path, user_role)
        assert g_sess.relayed and not u_sess.relayed
        assert g_sess.core.peer_path == (*gw.endpoint.use_path, u_local)
        active, passive = (g_sess, u_sess) if gw_role == "active" else (u_sess, g_sess)
        waiting = asyncio.ensure_future(passive.connect(timeout=10))
        await active.connect(timeout=10)
        await waiting

        texts = [f"{gw_role}: {i} h\u00e9llo".encode() for i in range(3)]
        for text in texts:
            assert isinstance(await g_sess.send(text, "text/plain"), MessageDelivered)
        got = [await asyncio.wait_for(user.received.get(), 10) for _ in texts]
        assert [m.body for m in got] == texts
        for text in texts:
            assert isinstance(await u_sess.send(text[::-1], "text/plain"), MessageDelivered)
        got = [await asyncio.wait_for(gw.received.get(), 10) for _ in texts]
        assert [m.body for m in got] == [t[::-1] for t in texts]

        at_gw = [f for f in gw.sends if f.to_path[0].session_id == g_local.session_id]
        at_user = [f for f in user.sends if f.to_path[0].session_id == u_local.session_id]
        assert len([f for f in at_gw if f.body]) == 3 and len([f for f in at_user if f.body]) == 3
        for frame in at_gw:  # the empty SEND too, when the user connected
            assert_from_path_is_peer_path(frame, g_sess)
        for frame in at_user:
            assert_from_path_is_peer_path(frame, u_sess)
        g_sess.close()
        u_sess.close()


async def test_two_relayed_sides_see_both_use_paths(relay: MsrpRelay, ca: trustme.CA) -> None:
    """Both sides AUTHed at the relay (RFC 4976 §2's two-relay case, one Kamailio
    playing both): From-Path = own Use-Path + the peer's Use-Path + the peer, which is
    the core's peer path (own Use-Path + the peer's a=path)."""
    server, client = contexts(ca) if relay.tls else (None, None)
    sides: list[Peer] = []
    try:
        for name in ("gw", "user"):
            endpoint = MsrpEndpoint("127.0.0.1", 0, ssl_server=server, ssl_client=client)
            await endpoint.start()
            sides.append(Peer(endpoint))
            await endpoint.use_relay(relay.uri, name, USERS[name], 60, timeout=5)
        gw, user = sides
        g_local, u_local = gw.endpoint.new_local_uri(), user.endpoint.new_local_uri()
        g_path, u_path = gw.endpoint.local_path(g_local), user.endpoint.local_path(u_local)
        g_sess = gw.session(g_local, u_path, "active")
        u_sess = user.session(u_local, g_path, "active")  # each connects to its own relay
        await u_sess.connect(timeout=10)
        await g_sess.connect(timeout=10)
        assert isinstance(await g_sess.send(b"to user", "text/plain"), MessageDelivered)
        assert isinstance(await u_sess.send(b"to gw", "text/plain"), MessageDelivered)
        assert (await asyncio.wait_for(user.received.get(), 10)).body == b"to user"
        assert (await asyncio.wait_for(gw.received.get(), 10)).body == b"to gw"
        for peer, sess in ((gw, g_sess), (user, u_sess)):
            frames = [f for f in peer.sends if f.body]
            assert frames
            for frame in frames:
                assert len(frame.from_path) == 3
                assert_from_path_is_peer_path(frame, sess)
    finally:
        for peer in sides:
            await peer.endpoint.close()
