"""End to end through an RFC 4976 relay: a real `msrp-gw run` node with `msrp.relay` set,
Kamailio's msrp relay over TLS (msrps, certificates from trustme) and over TCP, a page-mode
user (gw.sip) and a session-mode user (gw.sip + gw.msrp) that reaches the relay directly.

    page user --MESSAGE--> node ==MSRP via relay==> Kamailio --MSRP--> MSRP user
    MSRP user --MSRP--> Kamailio ==> node (over its AUTH connection) --MESSAGE--> page user

The node AUTHs at start; its offers and answers carry a=path = the relay's Use-Path + its
own URI, `TCP/TLS/MSRP` for msrps; every SEND the user gets has that path as From-Path.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme

from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.frame import Frame, FrameParser, FrameReceived
from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.sdp import find_msrp_media, parse_sdp
from gw.sip.transaction import Timers
from gw.sip.transport import ListenSpec
from tests.support.kamailio import MsrpRelay, require_kamailio, require_kamailio_tls
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop

GW_USER, GW_PASSWORD = "gw1", "gw-relay-pw"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def certs(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The node's certificate and key for its msrps listener, and the CA it trusts."""
    where = tmp_path_factory.mktemp("gw-tls")
    cert = ca.issue_cert("127.0.0.1")
    paths = {name: str(where / name) for name in ("gw.pem", "gw.key", "ca.pem")}
    cert.cert_chain_pems[0].write_to_path(paths["gw.pem"])
    cert.private_key_pem.write_to_path(paths["gw.key"])
    ca.cert_pem.write_to_path(paths["ca.pem"])
    return paths


@pytest.fixture(scope="module", params=["tls", "tcp"])
def relay(request: pytest.FixtureRequest, ca: trustme.CA) -> Iterator[MsrpRelay]:
    tls = request.param == "tls"
    if tls:
        require_kamailio_tls()  # Debian kamailio-tls-modules; fails in CI when missing
    else:
        require_kamailio()
    with MsrpRelay({GW_USER: GW_PASSWORD}, grace=1, tls=ca if tls else None) as r:
        yield r


@dataclass
class RelayedUser(MsrpUser):
    """MsrpUser whose MSRP endpoint speaks msrps when `ca` is given, and which records
    every SEND as it arrives (after TLS), for its From-Path."""

    ca: trustme.CA | None = None
    sends: list[Frame] = field(default_factory=list)
    _parsers: dict[Any, FrameParser] = field(default_factory=dict)

    async def start(self) -> None:
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)), self._handle)
        await self.sip.start([ListenSpec("UDP", "127.0.0.1", 0), ListenSpec("TCP", "127.0.0.1", 0)])
        server = client = None
        if self.ca is not None:
            server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ca.issue_cert("127.0.0.1").configure_cert(server)
            client = ssl.create_default_context()
            self.ca.configure_trust(client)
        self.msrp = MsrpEndpoint("127.0.0.1", 0, ssl_server=server, ssl_client=client)
        self.msrp.tracer = self._trace
        await self.msrp.start()

    def _trace(self, direction: str, data: bytes, peer: Any) -> None:
        if direction == "in":
            for ev in self._parsers.setdefault(peer, FrameParser()).feed(data):
                if isinstance(ev, FrameReceived) and ev.frame.method == "SEND":
                    self.sends.append(ev.frame)


@pytest.fixture
async def user(relay: MsrpRelay, ca: trustme.CA) -> AsyncIterator[RelayedUser]:
    u = RelayedUser(ca=ca if relay.tls else None)
    await u.start()
    yield u
    await u.close()


def start_node(
    redis_server: RedisServer, user: MsrpUser, relay: MsrpRelay, certs: dict[str, str]
) -> GatewayProcess:
    env = {
        "MSRPGW_STORE__URL": redis_server.url,
        "MSRPGW_NODE__ID": "gw-relay",
        "MSRPGW_SIP__T1": "0.1",
        "MSRPGW_SIP__T2": "0.4",
        "MSRPGW_GATEWAY__RURI_REWRITE": f"sip:{{user}}@127.0.0.1:{user.sip_port}",
        "MSRPGW_GATEWAY__SETUP_TIMEOUT": "5",
        "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
        "MSRPGW_MSRP__RELAY": str(relay.uri),
        "MSRPGW_MSRP__RELAY_USER": GW_USER,
        "MSRPGW_MSRP__RELAY_PASSWORD": GW_PASSWORD,
        "MSRPGW_MSRP__RELAY_EXPIRES": "60",
    }
    if relay.tls:  # msrps all the way: the node's own listener and URI too
        env |= {
            "MSRPGW_MSRP__LISTEN": "msrps://127.0.0.1:0;tcp",
            "MSRPGW_TLS__CERT_FILE": certs["gw.pem"],
            "MSRPGW_TLS__KEY_FILE": certs["gw.key"],
            "MSRPGW_TLS__CA_FILE": certs["ca.pem"],
        }
    node = GatewayProcess(env=env)
    node.start()
    return node


async def stop(node: GatewayProcess) -> None:
    code = await asyncio.to_thread(node.stop)
    assert code == 0, node.output()


def metrics(node: GatewayProcess) -> str:
    with urllib.request.urlopen(f"http://{node.ready['mgmt']}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return text


def sample(text: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", text, re.M)
    assert m is not None, f"{series} not in /metrics"
    return float(m[1])


def relay_path(node: GatewayProcess, relay: MsrpRelay) -> list[str]:
    """The node's a=path as ready.json reports its Use-Path, checked against the relay."""
    use_path = node.ready["msrp_relay"].split()
    assert len(use_path) == 1
    scheme = "msrps" if relay.tls else "msrp"
    assert use_path[0].startswith(f"{scheme}://{relay.host}:{relay.port()}/"), use_path
    return use_path


def check_media(body: bytes, use_path: list[str], node: GatewayProcess, tls: bool) -> None:
    media = find_msrp_media(parse_sdp(body))
    assert media is not None
    assert media.tls is tls, "msrps offers/answers say TCP/TLS/MSRP"
    assert media.path[: len(use_path)] == use_path, "a=path starts with the relay's Use-Path"
    [ours] = media.path[len(use_path) :]
    assert ours.startswith(node.ready["msrp"].removesuffix(";tcp") + "/"), (ours, node.ready)


async def test_page_to_msrp_through_the_relay(
    redis_server: RedisServer,
    relay: MsrpRelay,
    user: RelayedUser,
    page: PageUser,
    certs: dict[str, str],
) -> None:
    node = await asyncio.to_thread(start_node, redis_server, user, relay, certs)
    try:
        use_path = relay_path(node, relay)
        texts = [b"first through the relay", "zweite \u00fcber".encode(), b"-------", b"x" * 5000]
        for text in texts:  # one at a time: each answered after the MSRP side accepted it
            response = await page.message(node, user.uri("bob"), text)
            assert response.status == 200, node.output()
        received = await user.wait_for(len(texts))
        assert [r.body for r in received] == texts
        assert all(r.content_type == "text/plain" for r in received)
        assert len(user.invites) == 1, "later MESSAGEs reuse the relayed session"

        offer = user.invites[0].request.body
        check_media(offer, use_path, node, relay.tls)
        advertised = find_msrp_media(parse_sdp(offer))
        assert advertised is not None
        for frame in user.sends:  # relay prepends its Use-Path URI: the SDP path exactly
            assert [str(u) for u in frame.from_path] == advertised.path
        assert len([f for f in user.sends if f.body]) >= len(texts)

        text = metrics(node)
        assert sample(text, "msrpgw_msrp_relay_up") == 1
        assert sample(text, 'msrpgw_msrp_relay_auth_total{result="ok"}') == 1
        assert "cannot" not in relay.log_text()
    finally:
        await stop(node)
    assert user.byes == 1, "SIGTERM ends the relayed session with BYE"


async def test_msrp_to_page_through_the_relay(
    redis_server: RedisServer,
    relay: MsrpRelay,
    user: RelayedUser,
    page: PageUser,
    certs: dict[str, str],
) -> None:
    node = await asyncio.to_thread(start_node, redis_server, user, relay, certs)
    try:
        use_path = relay_path(node, relay)
        offered = await user.offer(node.sip("udp"), to=page.aor("alice"))
        assert offered.status == 200 and offered.media is not None
        check_media(offered.response.body, use_path, node, relay.tls)
        # the node answered passive: the user connects to the relay, which delivers to the
        # node over the node's own AUTH connection
        handle = user._session(
            offered.media.path, offered.local_uri, "active", offered.media.accept_types
        )
        await handle.connect(timeout=10)
        assert handle.link is not None and handle.link.peername[1] == relay.port()
        # The first message alone: it waits for the session's first deadline refresh in
        # Redis. Then a burst, sent as fast as the relay's hop-by-hop 200s allow. (Messages
        # that arrive while a refresh completes can leave the gateway out of order, relay
        # or not; and a MESSAGE too big for UDP is sent from a task, so a later small one
        # may overtake it: hence the big one last. Neither is about relays.)
        texts = [f"{i}: h\u00e9llo page mode".encode() for i in range(5)] + [b"y" * 9000]
        first = await handle.send(texts[0], "text/plain")
        assert type(first).__name__ == "MessageDelivered", first
        await page.wait_for(1)
        for text in texts[1:]:
            outcome = await handle.send(text, "text/plain")
            assert type(outcome).__name__ == "MessageDelivered", outcome
        messages = await page.wait_for(len(texts))
        assert [m.body for m in messages] == texts, "exact text, in order"
        assert all(m.content_type == "text/plain" for m in messages)
    finally:
        await stop(node)


async def test_node_authenticates_again_after_losing_the_relay(
    redis_server: RedisServer,
    relay: MsrpRelay,
    user: RelayedUser,
    page: PageUser,
    certs: dict[str, str],
) -> None:
    """The relay goes away (its connection drops): relayed sessions end (BYE), MESSAGEs get
    503 while it is down, and the node AUTHs again with backoff once it is back."""
    node = await asyncio.to_thread(start_node, redis_server, user, relay, certs)
    try:
        assert (await page.message(node, user.uri("bob"), b"before")).status == 200
        await user.wait_for(1)  # the 200 was the relay's (hop by hop): wait for the user
        await asyncio.to_thread(relay.stop)
        await _until(lambda: user.byes == 1)
        down = await page.message(node, user.uri("bob"), b"while down")
        assert down.status == 503 and down.get("Retry-After"), node.output()
        await asyncio.sleep(1.0)  # a few failed attempts (connection refused)
        await asyncio.to_thread(relay.restart)
        await _until(
            lambda: sample(metrics(node), 'msrpgw_msrp_relay_auth_total{result="ok"}') == 2
        )
        text = metrics(node)
        assert sample(text, "msrpgw_msrp_relay_lost_total") == 1
        assert sample(text, 'msrpgw_msrp_relay_auth_total{result="failed"}') >= 1
        assert sample(text, "msrpgw_msrp_relay_up") == 1
        assert (await page.message(node, user.uri("bob"), b"after")).status == 200
        received = await user.wait_for(2)
        assert [r.body for r in received] == [b"before", b"after"]
        assert len(user.invites) == 2, "a new relayed session after the loss"
    finally:
        await stop(node)
    log = node.output()
    assert "lost" in log and "AUTH failed" in log, log


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(predicate):
            await asyncio.sleep(0.1)
