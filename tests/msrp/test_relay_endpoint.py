"""Two of our MSRP endpoints (gw.msrp.endpoint) talking through Kamailio's RFC 4976 relay.

`RelayedLink` is interim glue: an endpoint `Link` whose connection is also our AUTH
binding at the relay. It needs three things the endpoint does not offer publicly
yet (see the module's report): a way to claim AUTH responses before the
connection core calls them unmatched, a way to register an already-open link as
the outbound connection for a first hop, and a link that session close and idle
timeout leave open.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import pytest

from gw.msrp.connection import MsrpConnection
from gw.msrp.endpoint import DEFAULT_PORT, Link, MsrpEndpoint, Session
from gw.msrp.events import MessageDelivered, MessageReceived, SessionEvent
from gw.msrp.frame import FrameError, FrameParser, FrameReceived, make_response, serialize
from gw.msrp.relay import Authenticated, AuthFailed, RelayAuthError, RelayClient, RelayEvent
from gw.msrp.uri import MsrpUri
from tests.support.kamailio import MsrpRelay, require_kamailio

pytestmark = pytest.mark.interop

USERS = {"alice": "wonder-land", "bob": "b0b.s3cret"}
_FOREVER = 10.0**9  # idle timeout for a relay connection: it lives as long as the grant


def _key(uri: MsrpUri) -> tuple[str, str, int, str]:
    """The endpoint's connection-reuse key (MsrpEndpoint._outbound_link)."""
    return (uri.scheme, uri.host.lower(), uri.port or DEFAULT_PORT, uri.transport.lower())


class RelayedLink(Link):
    """An outbound endpoint link that first AUTHs at a relay and keeps the grant fresh.

    AUTH responses go to the RelayClient; every other frame goes to the
    connection core (`MsrpConnection.receive_frame`), so sessions work as on
    any outbound link.
    """

    def __init__(self, endpoint: MsrpEndpoint, client: RelayClient) -> None:
        super().__init__(endpoint, outbound=True, key=_key(client.relay_uri))
        # HOOK 3: a relay connection must outlive idle periods and its sessions
        self.core = MsrpConnection(
            endpoint.table,
            now=self.loop.time(),
            outbound=True,
            idle_timeout=_FOREVER,
            max_chunk_size=endpoint.max_chunk_size,
        )
        self.relay = client
        self.granted: asyncio.Future[RelayEvent] = self.loop.create_future()
        self.relay_events: list[RelayEvent] = []
        self._parser = FrameParser(endpoint.max_chunk_size)
        self._relay_timer: asyncio.TimerHandle | None = None
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.relay.start(self.loop.time())
        self._relay_flush()

    def data_received(self, data: bytes) -> None:
        # HOOK 1: the core would report AUTH responses as UnmatchedResponse (tid
        # and status only), so parse here and hand the core the other frames.
        now = self.loop.time()
        for ev in self._parser.feed(data):
            if isinstance(ev, FrameReceived):
                if self.relay.handles(ev.frame):
                    self._relay_dispatch(self.relay.receive(ev.frame, now))
                else:
                    self.core.receive_frame(ev.frame, now)
            else:
                self._frame_error(ev)
        if self._parser.closed:
            self.core.close("framing lost")
        self._relay_flush()
        self.kick()

    def _frame_error(self, err: FrameError) -> None:
        req = err.request
        if req is None or req.method in (None, "REPORT") or err.fatal or self.transport is None:
            return
        if (req.header("Failure-Report") or "").strip().lower() == "no":
            return
        with contextlib.suppress(ValueError):
            self.transport.write(serialize(make_response(req, err.code, err.reason)))

    def close(self) -> None:
        # HOOK 3: Session.close closes an outbound link once it has no session;
        # that would drop the relay grant, so only close_relay() closes us.
        if self._closing:
            super().close()

    def close_relay(self) -> None:
        self._closing = True
        self.relay.close()
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._relay_timer is not None:
            self._relay_timer.cancel()
        self._relay_dispatch(self.relay.connection_lost())
        super().connection_lost(exc)

    def _relay_flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            for frame in self.relay.frames_to_send():
                self.transport.write(serialize(frame))  # between whole core frames
        if self._relay_timer is not None:
            self._relay_timer.cancel()
            self._relay_timer = None
        deadline = self.relay.next_refresh(self.loop.time())
        if deadline is not None:
            self._relay_timer = self.loop.call_at(deadline, self._relay_fire)

    def _relay_fire(self) -> None:
        self._relay_timer = None
        self._relay_dispatch(self.relay.on_timer(self.loop.time()))
        self._relay_flush()

    def _relay_dispatch(self, events: list[RelayEvent]) -> None:
        for event in events:
            self.relay_events.append(event)
            if not self.granted.done():
                self.granted.set_result(event)
            if isinstance(event, Authenticated):
                # HOOK 2: sessions whose first hop is our relay must reuse this link
                for uri in event.use_path[:1]:
                    self.endpoint._outbound[_key(uri)] = self


async def open_relayed_link(
    endpoint: MsrpEndpoint, client: RelayClient, timeout: float = 10.0
) -> RelayedLink:
    """Connect to the relay, AUTH, register the link for the relay's first hop."""
    loop = asyncio.get_running_loop()
    uri = client.relay_uri
    _, link = await loop.create_connection(
        lambda: RelayedLink(endpoint, client), uri.host, uri.port or DEFAULT_PORT
    )
    event = await asyncio.wait_for(link.granted, timeout)
    if isinstance(event, AuthFailed):
        link.close_relay()
        raise RelayAuthError(event)
    return link


@pytest.fixture(scope="module")
def relay() -> Iterator[MsrpRelay]:
    require_kamailio()
    with MsrpRelay(USERS, min_expires=1, grace=1) as r:
        yield r


class Side:
    def __init__(self, endpoint: MsrpEndpoint, link: RelayedLink) -> None:
        self.endpoint = endpoint
        self.link = link
        self.events: list[SessionEvent] = []
        self.received: asyncio.Queue[MessageReceived] = asyncio.Queue()

    def on_event(self, event: SessionEvent) -> None:
        self.events.append(event)
        if isinstance(event, MessageReceived):
            self.received.put_nowait(event)


@pytest.fixture
async def sides(relay: MsrpRelay) -> AsyncIterator[tuple[Side, Side]]:
    made: list[Side] = []
    try:
        for name in ("alice", "bob"):
            endpoint = MsrpEndpoint("127.0.0.1", 0)
            await endpoint.start()
            client = RelayClient(relay.uri, endpoint.uri, name, USERS[name], 2)
            link = await open_relayed_link(endpoint, client)
            made.append(Side(endpoint, link))
        yield made[0], made[1]
    finally:
        for side in made:
            side.link.close_relay()
            await side.endpoint.close()


def _session(side: Side, local: MsrpUri, peer_path: tuple[MsrpUri, ...]) -> Session:
    return side.endpoint.create_session(
        side.link.relay.outbound_to_path(peer_path),
        local_uri=local,
        role="active",  # RFC 4976: each side connects to its own relay
        on_event=side.on_event,
    )


async def test_chunked_messages_between_two_endpoints_via_relay(sides: tuple[Side, Side]) -> None:
    alice, bob = sides
    a_local, b_local = alice.endpoint.new_local_uri(), bob.endpoint.new_local_uri()
    # what each side would put in its SDP a=path
    a_path, b_path = alice.link.relay.path(a_local), bob.link.relay.path(b_local)
    assert a_path[-1] == a_local and len(a_path) == 2

    a_sess = _session(alice, a_local, b_path)
    b_sess = _session(bob, b_local, a_path)
    await b_sess.connect(timeout=10)
    await a_sess.connect(timeout=10)
    assert a_sess.link is alice.link and b_sess.link is bob.link  # the AUTHed connections

    big = bytes(i % 253 for i in range(50 * 1024))
    small = [b"hi", "gr\u00fc\u00df dich".encode(), b"-------" + b"x" * 10]
    outcomes = await asyncio.gather(
        a_sess.send(big, "application/octet-stream"),
        *(a_sess.send(m, "text/plain") for m in small),
    )
    assert all(isinstance(o, MessageDelivered) for o in outcomes), outcomes
    got = [await asyncio.wait_for(bob.received.get(), 10) for _ in range(4)]
    assert sorted(m.body for m in got) == sorted([big, *small])
    by_body = {m.body: m for m in got}
    assert by_body[big].content_type == "application/octet-stream"

    # and back, through the same relay sessions
    reply = await b_sess.send(b"ack " * 3000, "text/plain")  # 12 000 bytes: 6 chunks
    assert isinstance(reply, MessageDelivered)
    back = await asyncio.wait_for(alice.received.get(), 10)
    assert back.body == b"ack " * 3000

    # the grants (Expires 2 s) were refreshed meanwhile or right after, paths unchanged
    await asyncio.sleep(2.0)
    for side, path in ((alice, a_path), (bob, b_path)):
        refreshes = [
            e for e in side.link.relay_events if isinstance(e, Authenticated) and e.refresh
        ]
        assert refreshes and not any(e.path_changed for e in refreshes)
        assert side.link.relay.path(path[-1]) == path
    late = await a_sess.send(b"after refresh", "text/plain")
    assert isinstance(late, MessageDelivered)
    assert (await asyncio.wait_for(bob.received.get(), 10)).body == b"after refresh"
