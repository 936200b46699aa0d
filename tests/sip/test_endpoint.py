"""Two gw.sip endpoints over real loopback sockets: dialogs, CANCEL, size-driven TCP, TLS."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from typing import cast

import pytest
import trustme

from gw.sip.dialog import Dialog
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response, parse_message
from gw.sip.responses import build_response
from gw.sip.transaction import Timers
from gw.sip.transport import ListenSpec
from gw.sip.uri import parse_uri
from tests.support.ports import free_port

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


class Peer:
    """A scriptable UAS: `answer` decides the response to each request."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.acks: list[Request] = []
        self.answer: Callable[[IncomingRequest], None] = lambda inc: inc.respond(200)
        self.hold: asyncio.Event | None = None

    async def __call__(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "ACK":
            self.acks.append(incoming.request)
            return
        self.seen.append(incoming.request)
        if self.hold is not None and incoming.request.method == "INVITE":
            incoming.respond(180)
            await self.hold.wait()
            if incoming.final_sent:
                return
        self.answer(incoming)


async def make(
    handler: Peer | None = None,
    *,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    t1: float = 0.05,
) -> SipEndpoint:
    cfg = EndpointConfig(timers=Timers(t1=t1, t2=8 * t1, t4=10 * t1, td=64 * t1))
    specs = [ListenSpec("UDP", "127.0.0.1", 0), ListenSpec("TCP", "127.0.0.1", 0)]
    if tls is not None:
        cfg.tls_server, cfg.tls_client = tls
        specs.append(ListenSpec("TLS", "127.0.0.1", 0))
    ep = SipEndpoint(cfg, handler)
    await ep.start(specs)
    return ep


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SipEndpoint, SipEndpoint, Peer]]:
    peer = Peer()
    uas = await make(peer)
    uac = await make(None)
    yield uac, uas, peer
    await uac.close()
    await uas.close()


def invite_to(uac: SipEndpoint, uas: SipEndpoint, transport: str = "UDP") -> Request:
    port = uas.local(transport).port
    params = "" if transport == "UDP" else f";transport={transport.lower()}"
    return uac.new_request(
        "INVITE",
        f"sip:bob@127.0.0.1:{port}{params}",
        from_="<sip:alice@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=SDP,
        content_type="application/sdp",
        headers=[("Contact", f"<{uac.contact_uri(transport)}>")],
    )


def answer_invite(inc: IncomingRequest) -> None:
    inc.respond(200, body=SDP, content_type="application/sdp")


async def test_invite_creates_dialog_ack_and_bye(
    pair: tuple[SipEndpoint, SipEndpoint, Peer],
) -> None:
    uac, uas, peer = pair
    peer.answer = answer_invite
    response, dialog = await uac.invite(invite_to(uac, uas))
    assert response.status == 200
    assert dialog is not None
    await asyncio.sleep(0.2)
    assert len(peer.acks) == 1, "the 2xx must be ACKed once"
    ack = peer.acks[0]
    assert ack.cseq == (dialog.invite_seq, "ACK")
    assert ack.to.tag == response.to.tag
    assert len(uas.dialogs) == 1
    bye = await uac.bye(dialog)
    assert bye.status == 200
    assert uas.dialogs == {}
    assert peer.seen[-1].method == "BYE"
    assert peer.seen[-1].cseq[0] == dialog.local_seq


async def test_request_in_unknown_dialog_gets_481(
    pair: tuple[SipEndpoint, SipEndpoint, Peer],
) -> None:
    uac, uas, peer = pair
    fake = Dialog(
        call_id="nope",
        local_tag="a",
        remote_tag="b",
        local="<sip:alice@127.0.0.1>;tag=a",
        remote="<sip:bob@127.0.0.1>;tag=b",
        remote_target=parse_uri(f"sip:bob@127.0.0.1:{uas.local('UDP').port}"),
        local_seq=5,
    )
    response = await uac.bye(fake)
    assert response.status == 481
    assert peer.seen == [], "481 is the endpoint's answer; the TU never sees it"


async def test_reinvite_updates_remote_target(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    uac, uas, peer = pair
    peer.answer = answer_invite
    _, dialog = await uac.invite(invite_to(uac, uas))
    assert dialog is not None
    uas_dialog = next(iter(uas.dialogs.values()))
    response = await uac.in_dialog(dialog, "INVITE", body=SDP, content_type="application/sdp")
    assert response.status == 200
    await asyncio.sleep(0.2)
    assert len(peer.acks) == 2
    assert uas_dialog.remote_seq == dialog.local_seq
    # An out-of-order CSeq inside the dialog is refused with 500 (§12.2.2).
    dialog.local_seq = 0
    stale = await uac.in_dialog(dialog, "INFO")
    assert stale.status == 500


async def test_cancel_pending_invite(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    uac, uas, peer = pair
    peer.hold = asyncio.Event()
    invite = invite_to(uac, uas)
    ringing = asyncio.Event()
    task = asyncio.create_task(uac.invite(invite, on_provisional=lambda r: ringing.set()))
    await asyncio.wait_for(ringing.wait(), 2)
    cancel_response = await uac.cancel(invite)
    assert cancel_response.status == 200
    response, dialog = await asyncio.wait_for(task, 5)
    assert response.status == 487
    assert dialog is None
    peer.hold.set()


async def test_cancel_without_invite_gets_481(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    uac, uas, _ = pair
    invite = invite_to(uac, uas)
    # a Via as if the INVITE had been sent (it never was)
    invite.add("Via", f"SIP/2.0/UDP 127.0.0.1:{uac.local('UDP').port};branch=z9hG4bK-nosent")
    response = await uac.cancel(invite)
    assert response.status == 481


async def test_large_request_moves_to_tcp(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    """§18.1.1: a request over 1300 bytes goes over TCP when the URI does not force UDP."""
    uac, uas, peer = pair
    body = b"x" * 2000
    req = uac.new_request(
        "MESSAGE",
        f"sip:bob@127.0.0.1:{uas.local('UDP').port}",
        from_="<sip:alice@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=body,
        content_type="text/plain",
    )
    # The OS gave the UAS different UDP and TCP ports; a real UAS has one port for both.
    # Address the TCP port: the URI names no transport, so the request would go over UDP.
    req.uri = dataclasses.replace(req.uri, port=uas.local("TCP").port)
    response = await uac.request(req)
    assert response.status == 200
    assert peer.seen[-1].body == body
    assert peer.seen[-1].top_via.transport == "TCP"


async def test_small_request_stays_on_udp(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    uac, uas, peer = pair
    req = uac.new_request(
        "MESSAGE",
        f"sip:bob@127.0.0.1:{uas.local('UDP').port}",
        from_="<sip:alice@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=b"short",
        content_type="text/plain",
    )
    response = await uac.request(req)
    assert response.status == 200
    assert peer.seen[-1].top_via.transport == "UDP"


async def test_rport_and_received_are_stamped(pair: tuple[SipEndpoint, SipEndpoint, Peer]) -> None:
    uac, uas, _ = pair
    req = uac.new_request(
        "MESSAGE",
        f"sip:bob@127.0.0.1:{uas.local('UDP').port}",
        from_="<sip:alice@127.0.0.1>",
        to="<sip:bob@127.0.0.1>",
        body=b"hi",
        content_type="text/plain",
    )
    response = await uac.request(req)
    via = response.top_via
    assert via.rport == uac.local("UDP").port
    assert via.received in (None, "127.0.0.1")


async def test_connection_refused_is_503() -> None:
    uac = await make(None)
    try:
        port = free_port()
        req = uac.new_request(
            "MESSAGE",
            f"sip:bob@127.0.0.1:{port};transport=tcp",
            from_="<sip:alice@127.0.0.1>",
            to="<sip:bob@127.0.0.1>",
            body=b"hi",
            content_type="text/plain",
        )
        response = await uac.request(req)
        assert response.status == 503
    finally:
        await uac.close()


async def test_tls_transport_round_trip() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    peer = Peer()
    uas = await make(peer, tls=(server_ctx, client_ctx))
    uac = await make(None, tls=(server_ctx, client_ctx))
    try:
        req = uac.new_request(
            "MESSAGE",
            f"sips:bob@127.0.0.1:{uas.local('TLS').port}",
            from_="<sips:alice@127.0.0.1>",
            to="<sips:bob@127.0.0.1>",
            body=b"secret",
            content_type="text/plain",
        )
        response = await uac.request(req)
        assert response.status == 200
        assert peer.seen[-1].top_via.transport == "TLS"
        assert peer.seen[-1].body == b"secret"
    finally:
        await uac.close()
        await uas.close()


async def test_malformed_request_gets_400_and_endpoint_keeps_serving(
    pair: tuple[SipEndpoint, SipEndpoint, Peer],
) -> None:
    _, uas, peer = pair
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not got.done():
                got.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    bad = (
        "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKbad1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c1\r\n"
        "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    transport.sendto(bad, ("127.0.0.1", uas.local("UDP").port))
    data = await asyncio.wait_for(got, 2)
    transport.close()
    assert data.startswith(b"SIP/2.0 400 ")
    assert b"CSeq Method Mismatch" in data
    assert peer.seen == []
    assert uas.stats.parse_errors == 1


@pytest.mark.parametrize(
    ("length", "reason"),
    [("abc", b"Bad Content-Length"), ("5\r\nContent-Length: 7", b"Multiple Content-Length")],
)
async def test_framing_error_on_tcp_gets_400_before_the_close(
    pair: tuple[SipEndpoint, SipEndpoint, Peer], length: str, reason: bytes
) -> None:
    """Framing is lost, so the connection closes; the sender still learns why."""
    _, uas, peer = pair
    reader, writer = await asyncio.open_connection("127.0.0.1", uas.local("TCP").port)
    port = writer.get_extra_info("sockname")[1]
    bad = (
        "MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:{port};branch=z9hG4bKbad2\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c2\r\n"
        f"CSeq: 1 MESSAGE\r\nContent-Length: {length}\r\n\r\nhello"
    ).encode()
    writer.write(bad)
    data = await asyncio.wait_for(reader.read(), 2)  # to EOF: the gateway closes
    writer.close()
    assert data.startswith(b"SIP/2.0 400 " + reason), data
    assert peer.seen == []


async def test_a_flood_of_bad_datagrams_is_counted_each_and_logged_once_a_second(
    pair: tuple[SipEndpoint, SipEndpoint, Peer], caplog: pytest.LogCaptureFixture
) -> None:
    _, uas, _ = pair
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(200):
            sock.sendto(b"NOT SIP %d\r\n\r\n" % i, ("127.0.0.1", uas.local("UDP").port))
        for _ in range(100):
            if uas.stats.parse_errors >= 200:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.1)
        sock.sendto(b"NOT SIP again\r\n\r\n", ("127.0.0.1", uas.local("UDP").port))
        await asyncio.sleep(0.2)
    finally:
        sock.close()
    assert uas.stats.parse_errors == 201
    lines = [r.getMessage() for r in caplog.records if "sip parse error" in r.getMessage()]
    assert 2 <= len(lines) <= 3, lines
    assert lines[-1].endswith("more since the last such line)"), lines


def test_timer_rearm_with_a_past_deadline_under_uvloop() -> None:
    """uvloop's call_at returns a plain Handle (no `when()`) for a deadline already past;
    re-arming then must not raise (it once dropped the message being handled)."""
    import uvloop

    async def main() -> int:
        ep = SipEndpoint(EndpointConfig())
        await ep.start([ListenSpec("UDP", "127.0.0.1", 0)])
        fired = 0
        real_on_timer = ep.layer.on_timer

        def on_timer(now: float) -> list[object]:
            nonlocal fired
            fired += 1
            return real_on_timer(now)  # type: ignore[return-value]

        ep.layer.next_deadline = lambda: ep.now() - 1.0  # type: ignore[method-assign]
        ep.layer.on_timer = on_timer  # type: ignore[assignment,method-assign]
        ep.arm()
        ep.arm()  # a handle for a past deadline exists: compare, don't call when()
        await asyncio.sleep(0.01)
        ep.layer.next_deadline = lambda: None  # type: ignore[method-assign]
        await ep.close()
        return fired

    assert uvloop.run(main()) >= 1


@pytest.mark.parametrize("size", [0, 1 << 20])
async def test_udp_buffer_size(size: int) -> None:
    """sip.udp_buffer: a larger receive buffer absorbs a pause of the node under load."""
    ep = SipEndpoint(EndpointConfig(udp_buffer=size), lambda inc: inc.respond(200))
    await ep.start([ListenSpec("UDP", "127.0.0.1", 0)])
    try:
        sock = ep.transports.udp_socket
        assert sock is not None
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        with open("/proc/sys/net/core/rmem_default") as f:
            default = 2 * int(f.read())  # Linux reports twice what is set
        if size:
            assert got >= size, got
        else:
            assert got <= default, got
    finally:
        await ep.close()


class RawUdp(asyncio.DatagramProtocol):
    """A hand-driven UDP peer: what it receives is parsed and queued."""

    def __init__(self) -> None:
        self.got: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.got.put_nowait(parse_message(data))

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self, message: Request | Response, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(message.to_bytes(), ("127.0.0.1", port))


async def raw_udp() -> RawUdp:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(RawUdp, local_addr=("127.0.0.1", 0))
    return proto


async def test_unacked_2xx_is_retransmitted_then_the_dialog_is_ended_with_bye() -> None:
    """§13.3.1.4 through the endpoint's one timer: the dialog layer's deadlines drive it."""
    peer = Peer()
    peer.answer = answer_invite
    uas = await make(peer, t1=0.01)
    raw = await raw_udp()
    try:
        invite = Request(
            headers=[
                ("Via", f"SIP/2.0/UDP 127.0.0.1:{raw.port};branch=z9hG4bKnoack;rport"),
                ("From", "<sip:alice@127.0.0.1>;tag=a1"),
                ("To", "<sip:bob@127.0.0.1>"),
                ("Call-ID", "no-ack@127.0.0.1"),
                ("CSeq", "1 INVITE"),
                ("Contact", f"<sip:alice@127.0.0.1:{raw.port}>"),
            ],
            method="INVITE",
            uri=parse_uri(f"sip:bob@127.0.0.1:{uas.local('UDP').port}"),
        )
        raw.send(invite, uas.local("UDP").port)
        oks, bye = 0, None
        while bye is None:
            msg = await asyncio.wait_for(raw.got.get(), 5)
            if isinstance(msg, Response) and msg.status == 200:
                oks += 1
            elif isinstance(msg, Request) and msg.method == "BYE":
                bye = msg
        assert oks >= 4, "the 2xx and its retransmissions (T1, 3*T1, 7*T1, ...)"
        assert bye.call_id == "no-ack@127.0.0.1" and bye.to.tag == "a1"
        assert uas.dialogs == {}
    finally:
        assert raw.transport is not None
        raw.transport.close()
        await uas.close()


async def test_retransmitted_2xx_to_our_invite_is_acked_again() -> None:
    """§13.2.2.4 through the endpoint: the transaction layer's stray 2xx gets the same ACK."""
    uac = await make(None)
    raw = await raw_udp()
    try:
        invite = uac.new_request(
            "INVITE",
            f"sip:bob@127.0.0.1:{raw.port}",
            from_="<sip:alice@127.0.0.1>",
            to="<sip:bob@127.0.0.1>",
            headers=[("Contact", f"<{uac.contact_uri('UDP')}>")],
        )
        pending = asyncio.create_task(uac.invite(invite))
        got = await asyncio.wait_for(raw.got.get(), 5)
        assert isinstance(got, Request) and got.method == "INVITE"
        ok = build_response(got, 200, to_tag="b1")
        ok.add("Contact", f"<sip:bob@127.0.0.1:{raw.port}>")
        raw.send(ok, uac.local("UDP").port)
        response, dialog = await asyncio.wait_for(pending, 5)
        assert response.status == 200 and dialog is not None
        first = await asyncio.wait_for(raw.got.get(), 5)
        raw.send(ok, uac.local("UDP").port)  # as if the ACK were lost
        again = await asyncio.wait_for(raw.got.get(), 5)
        assert isinstance(first, Request) and isinstance(again, Request)
        assert first.method == again.method == "ACK"
        assert again.to_bytes() == first.to_bytes()
    finally:
        assert raw.transport is not None
        raw.transport.close()
        await uac.close()
