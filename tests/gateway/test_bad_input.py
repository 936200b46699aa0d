"""Bad input that must get a clean answer (issue 4), end to end.

Each test drives a real `msrp-gw run` process (real Redis, real sockets) with one kind of
bad or hostile input and checks three things: the precise protocol answer, a JSON log
line from the node saying what happened, and that the node keeps serving (a normal
MESSAGE still gets 200 through a working MSRP user). ARCHITECTURE.md §7 lists where the
reference implementation falls over on the same input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import pytest

from gw.msrp.events import MessageDelivered, MessageFailed
from gw.msrp.frame import Frame, FrameError, FrameParser, FrameReceived, serialize
from gw.msrp.uri import MsrpUri, new_transaction_id, parse_msrp_uri
from gw.sip.transaction import Address
from tests.support.msrp_user import MsrpUser, Offered
from tests.support.node import GatewayProcess
from tests.support.page_user import EventWatch, PageUser
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer
from tests.support.sipp import Sipp

pytestmark = pytest.mark.interop

NODE_ID = "gw-bad"


# -- a raw MSRP connection: exact bytes out, every frame in -------------------------------------
class RawMsrp:
    """A TCP connection to the gateway's MSRP listener, written to by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser()
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, uri: MsrpUri) -> RawMsrp:
        reader, writer = await asyncio.open_connection(uri.host, uri.port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def write(self, data: bytes, *, bytewise: bool = False) -> None:
        if not bytewise:
            self.writer.write(data)
            await self.writer.drain()
            return
        for i in range(len(data)):
            self.writer.write(data[i : i + 1])
            await self.writer.drain()
            await asyncio.sleep(0.001)

    async def send(self, frame: Frame, *, bytewise: bool = False) -> None:
        await self.write(serialize(frame), bytewise=bytewise)

    async def read_frame(self, timeout: float = 5.0) -> Frame:
        async def _read() -> Frame:
            while not self.frames:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("gateway closed the MSRP connection")
                for event in self.parser.feed(data):
                    if isinstance(event, FrameReceived):
                        self.frames.append(event.frame)
                    else:
                        assert not isinstance(event, FrameError), event
            return self.frames.pop(0)

        return await asyncio.wait_for(_read(), timeout)

    async def silent(self, duration: float = 0.4) -> None:
        """Nothing arrives for `duration` seconds."""
        with contextlib.suppress(TimeoutError):
            frame = await self.read_frame(duration)
            raise AssertionError(f"unexpected frame from the gateway: {frame}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def send_frame(
    to: MsrpUri,
    frm: MsrpUri,
    body: bytes,
    *,
    message_id: str | None = None,
    content_type: str = "text/plain",
    headers: Iterable[tuple[str, str]] = (),
) -> Frame:
    """A whole-message SEND (an empty one, for binding, when `body` is empty)."""
    hdrs = [
        ("Message-ID", message_id or new_transaction_id()),
        ("Byte-Range", f"1-{len(body)}/{len(body)}"),
        *headers,
    ]
    return Frame.request(
        "SEND", [to], [frm], headers=hdrs, body=body, content_type=content_type if body else None
    )


def gateway_path(offered: Offered) -> MsrpUri:
    assert offered.status == 200 and offered.media is not None, offered.response
    assert offered.media.setup == "passive", "the gateway waits for our connection"
    return parse_msrp_uri(offered.media.path[-1])


async def open_session(
    node: GatewayProcess, peer: MsrpUser, page: PageUser, from_user: str
) -> tuple[RawMsrp, MsrpUri, MsrpUri]:
    """INVITE the gateway (page user as target), connect by hand and bind with an empty SEND."""
    offered = await peer.offer(node.sip("udp"), to=page.aor(), from_user=from_user)
    gw_uri = gateway_path(offered)
    raw = await RawMsrp.connect(gw_uri)
    bind = send_frame(gw_uri, offered.local_uri, b"")
    await raw.send(bind)
    answer = await raw.read_frame()
    assert (answer.tid, answer.status) == (bind.tid, 200), answer
    return raw, gw_uri, offered.local_uri


# -- the node's log, events ---------------------------------------------------------------------
def records(node: GatewayProcess) -> list[dict[str, Any]]:
    out = []
    for line in node.output().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def logged(
    node: GatewayProcess, pattern: str, *, count: int = 1, timeout: float = 3.0
) -> list[dict[str, Any]]:
    """Wait until at least `count` JSON log lines' msg match `pattern` (re.search)."""
    regex = re.compile(pattern)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        hits = [r for r in records(node) if regex.search(str(r.get("msg", "")))]
        if len(hits) >= count or loop.time() > deadline:
            assert len(hits) >= count, f"no log line /{pattern}/:\n{node.output()}"
            return hits
        await asyncio.sleep(0.05)


def assert_no_crash(node: GatewayProcess) -> None:
    assert node.proc is not None and node.proc.poll() is None, node.output()
    bad = [r for r in records(node) if r.get("level") in ("error", "critical")]
    assert not bad, bad
    assert "Traceback" not in node.output(), node.output()


async def assert_serving(node: GatewayProcess, page: PageUser, good: MsrpUser, tag: str) -> None:
    """A normal MESSAGE, to a working MSRP user, still gets 200 and is delivered."""
    before = len(good.received)
    body = f"still serving after {tag}".encode()
    response = await page.message(node, good.uri(f"ok-{tag}"), body)
    assert response.status == 200, (response, node.output())
    received = await good.wait_for(before + 1)
    assert received[-1].body == body
    assert_no_crash(node)


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
async def good() -> AsyncIterator[MsrpUser]:
    """A well-behaved session-mode user, for the 'still serving' check."""
    user = MsrpUser()
    await user.start()
    yield user
    await user.close()


@pytest.fixture
async def peer() -> AsyncIterator[MsrpUser]:
    """The session-mode user the test scripts (bad answers, raw connections)."""
    user = MsrpUser()
    await user.start()
    yield user
    await user.close()


@pytest.fixture
async def gateway(
    redis_server: RedisServer, page: PageUser, good: MsrpUser, peer: MsrpUser
) -> AsyncIterator[Callable[..., GatewayProcess]]:
    """Start nodes (stopped, and checked to exit 0, before the users close)."""
    nodes: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        node = GatewayProcess(
            env={
                "MSRPGW_STORE__URL": redis_server.url,
                "MSRPGW_NODE__ID": NODE_ID,
                "MSRPGW_SIP__T1": "0.1",
                "MSRPGW_SIP__T2": "0.4",
                "MSRPGW_GATEWAY__SETUP_TIMEOUT": "3",
                "MSRPGW_GATEWAY__DELIVERY_TIMEOUT": "5",
                "MSRPGW_MSRP__TRANSACTION_TIMEOUT": "3",
                **env,
            }
        )
        nodes.append(node)
        node.start()
        return node

    yield start
    for node in nodes:
        code = await asyncio.to_thread(node.stop)
        assert code == 0, node.output()


# -- 1. an MSRP REPORT sent into a gateway session ----------------------------------------------
async def test_report_into_session_is_never_answered(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway()
    raw, gw_uri, me = await open_session(node, peer, page, "report-sender")
    try:
        reports = [
            # a success REPORT for a message the gateway never sent
            Frame.request(
                "REPORT",
                [gw_uri],
                [me],
                headers=[
                    ("Message-ID", "never-sent-1"),
                    ("Byte-Range", "1-5/5"),
                    ("Status", "000 200 OK"),
                ],
            ),
            # a failure REPORT for one
            Frame.request(
                "REPORT",
                [gw_uri],
                [me],
                headers=[
                    ("Message-ID", "never-sent-2"),
                    ("Byte-Range", "1-5/5"),
                    ("Status", "000 415 Unsupported Media Type"),
                ],
            ),
            # malformed: no Status, no Message-ID
            Frame.request("REPORT", [gw_uri], [me], headers=[("Byte-Range", "1-5/5")]),
            # from someone who is not the session's peer
            Frame.request(
                "REPORT",
                [gw_uri],
                [parse_msrp_uri("msrp://127.0.0.1:9/intruder;tcp")],
                headers=[("Message-ID", "x"), ("Status", "000 200 OK")],
            ),
        ]
        for report in reports:
            await raw.send(report)
        await raw.silent(0.5)  # REPORTs are never answered (RFC 4975 §7.1.2)
        # The session still works: the next frame we get answers this SEND.
        send = send_frame(gw_uri, me, b"after the reports")
        await raw.send(send)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (send.tid, 200), answer
        messages = await page.wait_for(1)
        assert messages[0].body == b"after the reports"
        await raw.silent(0.3)
    finally:
        await raw.close()
    await logged(node, r"msrp REPORT ignored.*never-sent-1", timeout=1)
    await logged(node, r"msrp REPORT ignored.*never-sent-2", timeout=1)
    await logged(node, r"msrp request rejected: 400 malformed REPORT", timeout=1)
    await logged(node, r"msrp REPORT refused 481", timeout=1)
    await assert_serving(node, page, good, "report")
    assert len(page.messages) == 1


# -- 2. a MESSAGE without Content-Type, or with an empty body -----------------------------------
@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("message_uac_no_content_type.xml", "Missing Content-Type"),
        ("message_uac_empty_body.xml", "Empty Message Body"),
    ],
)
async def test_message_without_content_type_or_body_gets_400(
    gateway: Callable[..., GatewayProcess],
    page: PageUser,
    peer: MsrpUser,
    good: MsrpUser,
    scenario: str,
    reason: str,
) -> None:
    # SIPp addresses the gateway itself: route to the working MSRP user.
    node = gateway(MSRPGW_GATEWAY__RURI_REWRITE=f"sip:{{user}}@127.0.0.1:{good.sip_port}")
    result = await Sipp(scenario, remote=node.sip("udp"), replace={"EXPECT": "400"}).run()
    assert result.returncode == 0, result.errors + node.output()
    assert f"SIP/2.0 400 {reason}" in result.messages
    await logged(node, rf"rejected MESSAGE with 400 {reason} \(bad message\)")
    assert good.invites == [], "nothing reaches the MSRP side"
    await assert_serving(node, page, good, "bad-message")


# -- 3. the MSRP peer refuses the TCP connection ------------------------------------------------
async def test_msrp_connection_refused_fails_the_message_and_raises_event(
    gateway: Callable[..., GatewayProcess],
    page: PageUser,
    peer: MsrpUser,
    good: MsrpUser,
    events: EventWatch,
) -> None:
    dead = free_port(socket.SOCK_STREAM)
    peer.answer_path = f"msrp://127.0.0.1:{dead}/deadbeef;tcp"
    node = gateway()
    response = await page.message(node, peer.uri("refuser"), b"to a dead MSRP port")
    assert (response.status, response.reason) == (480, "MSRP Connection Failed"), node.output()
    event = await events.next("E_MSRP_GW_SETUP_FAILED")
    data = event["data"]
    assert data["key"] == "alice@127.0.0.1-refuser@127.0.0.1"
    assert data["from_uri"] == peer.uri("refuser")  # the MESSAGE's To
    assert data["to_uri"] == data["ruri"] == f"sip:alice@127.0.0.1:{page.port}"
    # The INVITE was answered 200: there was no negative SIP reply to report.
    assert data["code"] is None and data["reason"] is None
    assert len(peer.invites) == 1
    for _ in range(40):  # the accepted INVITE dialog is hung up
        if peer.byes:
            break
        await asyncio.sleep(0.05)
    assert peer.byes == 1
    await logged(node, r"session setup failed: 480 MSRP Connection Failed")
    ended = await logged(node, r"session ended")
    assert [r["msg"] for r in ended] == ["session ended: setup failed"], "ended once"
    await assert_serving(node, page, good, "refused")


# -- 4. the MSRP peer answers our SEND with 4xx -------------------------------------------------
async def test_msrp_peer_refusing_send_maps_to_message_answer(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    # Advertise text/plain in SDP but accept only text/html: the peer's session answers
    # the gateway's SEND with 415 (the empty binding SEND still gets 200).
    peer.advertise_types = ["text/plain"]
    peer.accept_types = ["text/html"]
    node = gateway()
    response = await page.message(node, peer.uri("picky"), b"plain text")
    assert response.status == 415, (response, node.output())
    assert response.reason == "Unsupported Media Type (MSRP peer)"
    assert peer.received == []
    await logged(node, r"message to MSRP failed: 415")
    # The session survives a refused message: the next one gets the same precise answer.
    response = await page.message(node, peer.uri("picky"), b"plain text again")
    assert response.status == 415, (response, node.output())
    assert len(peer.invites) == 1
    await assert_serving(node, page, good, "msrp-415")


# -- 5. a SEND whose body contains lines of seven dashes ----------------------------------------
async def test_send_with_dash_lines_is_delivered_byte_exact(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway(MSRPGW_LOG__LEVEL="debug")
    sipp = Sipp("message_uas.xml")
    await sipp.start()
    body = (
        b"first line\r\n"
        b"-------abc\r\n"
        b"-------a1B2c3D4e5$\r\n"
        b"-------f00ba4+\r\n"
        b"\r\n-------\r\n"
        b"last line -------"
    )
    status, handle = await peer.call(
        node.sip("udp"), to=f"alice@127.0.0.1:{sipp.port}", from_user="dasher"
    )
    assert status == 200 and handle is not None
    outcome = await handle.send(body, "text/plain", success_report=True)
    assert isinstance(outcome, MessageDelivered), (outcome, node.output())
    result = await sipp.wait()
    assert result.returncode == 0, result.errors + node.output()
    bodies = sipp_message_bodies(sipp)
    assert bodies == [body]
    await logged(node, rf"msrp message \S+ \({len(body)} bytes text/plain\) -> MESSAGE 200 OK")
    await assert_serving(node, page, good, "dashes")


def sipp_message_bodies(sipp: Sipp) -> list[bytes]:
    """Bodies of the MESSAGE requests in SIPp's -trace_msg log, cut by Content-Length.

    Read as bytes: SippResult.messages is text with CRLFs translated."""
    raw = (sipp.workdir / "messages.log").read_bytes()
    out = []
    for m in re.finditer(rb"MESSAGE sip:[^\r\n]* SIP/2\.0\r\n", raw):
        head_end = raw.index(b"\r\n\r\n", m.start())
        head = raw[m.start() : head_end]
        length = re.search(rb"(?im)^(?:Content-Length|l)[ \t]*:[ \t]*(\d+)", head)
        assert length is not None, head
        start = head_end + 4
        out.append(raw[start : start + int(length[1])])
    return out


# -- 6. a 100 KiB MSRP message in chunks --------------------------------------------------------
BIG = bytes((i * 7 + i // 251) % 94 + 33 for i in range(100 * 1024))


async def test_100k_message_refused_with_413_by_default(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway()
    status, handle = await peer.call(node.sip("udp"), to=page.aor(), from_user="big")
    assert status == 200 and handle is not None
    outcome = await handle.send(BIG, "text/plain")
    assert isinstance(outcome, MessageFailed), (outcome, node.output())
    assert outcome.code == 413
    await logged(node, r"msrp request rejected: 413")
    # The session is still usable for messages that fit.
    outcome = await handle.send(b"small one", "text/plain", success_report=True)
    assert isinstance(outcome, MessageDelivered), (outcome, node.output())
    messages = await page.wait_for(1)
    assert [m.body for m in messages] == [b"small one"]
    # The same limit holds on a session the gateway set up (msg_to_msrp), where the
    # session-mode user answers a page-mode user.
    response = await page.message(node, peer.uri("big-reply"), b"hello, reply big")
    assert response.status == 200, (response, node.output())
    outcome = await peer.sessions[-1].send(BIG, "text/plain")
    assert isinstance(outcome, MessageFailed), (outcome, node.output())
    assert outcome.code == 413
    await logged(node, r"msrp request rejected: 413", count=2)
    await asyncio.sleep(0.2)
    assert [m.body for m in page.messages] == [b"small one"]
    await assert_serving(node, page, good, "too-big")


class TcpUas:
    """A page-mode UAS on TCP only, written against the wire (SIPp cannot take it: its
    receive buffer is SIPP_MAX_MSG_SIZE = 64 KiB at compile time). Answers 200 to each
    request and keeps (head, body) of each as received."""

    def __init__(self) -> None:
        self.port = free_port(socket.SOCK_STREAM)
        self.requests: list[tuple[bytes, bytes]] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?im)^(?:Content-Length|l)[ \t]*:[ \t]*(\d+)", head)
                body = await reader.readexactly(int(length[1]) if length else 0)
                self.requests.append((head, body))
                self.arrived.set()
                copied = [
                    line
                    for line in head.split(b"\r\n")
                    if re.match(rb"(?i)(via|from|to|call-id|cseq)[ \t]*:", line)
                ]
                response = b"\r\n".join(
                    [b"SIP/2.0 200 OK", *copied, b"Content-Length: 0", b"", b""]
                )
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_100k_message_delivered_as_one_message_over_tcp(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway(
        MSRPGW_GATEWAY__MAX_PAGE_MESSAGE_SIZE="262144",
        MSRPGW_SIP__MAX_MESSAGE_SIZE="262144",
        MSRPGW_LOG__LEVEL="debug",
    )
    uas = TcpUas()
    await uas.start()
    try:
        # The page-mode R-URI has no transport: by size alone (RFC 3261 §18.1.1) the
        # gateway must take TCP to the same host and port.
        status, handle = await peer.call(
            node.sip("udp"), to=f"alice@127.0.0.1:{uas.port}", from_user="big"
        )
        assert status == 200 and handle is not None
        outcome = await handle.send(BIG, "text/plain", success_report=True)
        assert isinstance(outcome, MessageDelivered), (outcome, node.output())
        await asyncio.sleep(0.3)
        assert len(uas.requests) == 1, "one MESSAGE"
        head, body = uas.requests[0]
        assert head.startswith(f"MESSAGE sip:alice@127.0.0.1:{uas.port} SIP/2.0\r\n".encode())
        assert re.search(rb"(?im)^Via: SIP/2\.0/TCP ", head), head
        assert re.search(rb"(?im)^Content-Type: text/plain\r$", head), head
        assert body == BIG, "body intact"
    finally:
        await uas.close()
    await logged(node, rf"msrp message \S+ \({len(BIG)} bytes text/plain\) -> MESSAGE 200 OK")
    await assert_serving(node, page, good, "big-tcp")


# -- 7. a SEND arriving one byte at a time ------------------------------------------------------
async def test_send_one_byte_at_a_time_is_delivered_once(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway(MSRPGW_LOG__LEVEL="debug")
    offered = await peer.offer(node.sip("udp"), to=page.aor(), from_user="trickler")
    gw_uri = gateway_path(offered)
    raw = await RawMsrp.connect(gw_uri)
    try:
        bind = send_frame(gw_uri, offered.local_uri, b"")
        await raw.send(bind, bytewise=True)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (bind.tid, 200), answer
        body = b"one byte at a time\r\n-------but whole"
        send = send_frame(gw_uri, offered.local_uri, body, headers=[("Success-Report", "yes")])
        await raw.send(send, bytewise=True)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (send.tid, 200), answer
        report = await raw.read_frame()
        assert report.method == "REPORT" and report.header("Status") == "000 200 OK"
        assert report.message_id == send.message_id
        messages = await page.wait_for(1)
        assert [m.body for m in messages] == [body]
        await raw.silent(0.5)
        assert len(page.messages) == 1, "delivered once"
    finally:
        await raw.close()
    hits = await logged(node, r"msrp message \S+ \(36 bytes text/plain\) -> MESSAGE 200 OK")
    assert len(hits) == 1
    await assert_serving(node, page, good, "bytewise")


# -- 8. a SEND whose From-Path is not the peer's ------------------------------------------------
async def test_send_from_wrong_path_gets_481_and_is_not_delivered(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway()
    offered = await peer.offer(node.sip("udp"), to=page.aor(), from_user="spoofed")
    gw_uri = gateway_path(offered)
    intruder = parse_msrp_uri("msrp://127.0.0.1:9/intruder;tcp")
    raw = await RawMsrp.connect(gw_uri)
    try:
        # As the first request on a fresh connection ...
        spoof = send_frame(gw_uri, intruder, b"spoofed before binding")
        await raw.send(spoof)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (spoof.tid, 481), answer
        assert answer.to_path == (intruder,)
        # ... and on the connection the real peer bound.
        bind = send_frame(gw_uri, offered.local_uri, b"")
        await raw.send(bind)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (bind.tid, 200), answer
        spoof = send_frame(gw_uri, intruder, b"spoofed after binding")
        await raw.send(spoof)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (spoof.tid, 481), answer
        send = send_frame(gw_uri, offered.local_uri, b"from the real peer")
        await raw.send(send)
        answer = await raw.read_frame()
        assert (answer.tid, answer.status) == (send.tid, 200), answer
        messages = await page.wait_for(1)
        await asyncio.sleep(0.3)
        assert [m.body for m in messages] == [b"from the real peer"]
    finally:
        await raw.close()
    await logged(node, r"msrp SEND refused 481", count=2)
    await assert_serving(node, page, good, "from-path")


# -- 9. an INVITE without SDP, or with no MSRP stream -------------------------------------------
AUDIO_SDP = (
    b"v=0\r\n"
    b"o=- 1 1 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
)


async def test_invite_without_msrp_offer_gets_488(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway()
    assert peer.sip is not None
    for body, reason, warning in [
        (b"", "No SDP Offer", None),
        (AUDIO_SDP, "No MSRP Stream", '304 msrp-gw "Media type not available"'),
    ]:
        req = peer.sip.new_request(
            "INVITE",
            f"sip:alice@127.0.0.1:{node.sip('udp')[1]}",
            from_=f"<sip:bob@127.0.0.1:{peer.sip_port}>",
            to=f"<sip:{page.aor()}>",
            body=body,
            content_type="application/sdp" if body else None,
            headers=[("Contact", f"<{peer.sip.contact_uri('UDP')}>")],
        )
        response, dialog = await peer.sip.invite(req, Address("UDP", *node.sip("udp")))
        assert dialog is None
        assert (response.status, response.reason) == (488, reason), node.output()
        assert response.get("Warning") == warning
        await logged(node, rf"rejected INVITE with 488 {reason}")
    assert page.messages == []
    await assert_serving(node, page, good, "no-msrp-offer")


# -- 10. a MESSAGE looping back from the gateway itself -----------------------------------------
async def test_message_looping_back_gets_482_without_invite_loop(
    gateway: Callable[..., GatewayProcess],
    page: PageUser,
    peer: MsrpUser,
    good: MsrpUser,
    events: EventWatch,
) -> None:
    node = gateway()
    gw_host, gw_port = node.sip("udp")
    # (a) it carries the gateway's own loop-detection mark (its deployment's, kept in the store)
    deployment = node.ready["deployment"]
    assert deployment and deployment != NODE_ID
    response = await page.message(
        node, good.uri("looper"), b"marked", headers=[("X-Msrp-Gw", f"d-other, {deployment}")]
    )
    assert (response.status, response.reason) == (482, "Loop Detected")
    assert good.invites == []
    await logged(node, r"rejected MESSAGE with 482 Loop Detected \(loop\)")
    # (b) a proxy stripped the header but the gateway's own Via is in the stack
    result = await Sipp(
        "message_uac_via_loop.xml",
        remote=(gw_host, gw_port),
        replace={"EXPECT": "482", "LOOP_VIA": f"{gw_host}:{gw_port}"},
    ).run()
    assert result.returncode == 0, result.errors + node.output()
    await logged(node, r"rejected MESSAGE with 482 Loop Detected \(loop\)", count=2)
    # (c) its R-URI is the gateway itself: the INVITE it sends comes back and is refused,
    # once; the MESSAGE gets that 482.
    response = await page.message(node, f"sip:self@{gw_host}:{gw_port}", b"to myself")
    assert (response.status, response.reason) == (482, "Loop Detected"), node.output()
    event = await events.next("E_MSRP_GW_SETUP_FAILED")
    assert (event["data"]["code"], event["data"]["reason"]) == (482, "Loop Detected")
    await logged(node, r"rejected INVITE with 482 Loop Detected \(loop\)")
    # (d) session mode to page mode, the page-mode R-URI being the gateway: its MESSAGE
    # comes back, is refused 482, and the MSRP sender gets a failure REPORT.
    status, handle = await peer.call(
        (gw_host, gw_port), to=f"self@{gw_host}:{gw_port}", from_user="mirror"
    )
    assert status == 200 and handle is not None
    outcome = await handle.send(b"echo?", "text/plain", success_report=True)
    assert isinstance(outcome, MessageFailed) and outcome.code == 403, (outcome, node.output())
    await logged(node, r"msrp message \S+ \(5 bytes text/plain\) -> MESSAGE 482 Loop Detected")
    await asyncio.sleep(0.3)
    invites = [r for r in records(node) if re.search(r"rejected INVITE with 482", r["msg"])]
    assert len(invites) == 1, "no INVITE loop"
    loops = [r for r in records(node) if re.search(r"rejected MESSAGE with 482", r["msg"])]
    assert len(loops) == 3
    await assert_serving(node, page, good, "loop")


# -- 11. the session table never lies (issue 16 §1) ---------------------------------------------
def mi_sessions(node: GatewayProcess) -> list[dict[str, Any]]:
    result = node.mi("msrp_gw_list_sessions")
    sessions: list[dict[str, Any]] = result["Sessions"] if isinstance(result, dict) else result
    return sessions


def offer_with_path(path: str, port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=message {port} TCP/MSRP *\r\na=accept-types:text/plain\r\na=path:{path}\r\n"
    ).encode()


async def test_invite_with_a_bad_msrp_path_gets_400_and_leaves_no_session(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    node = gateway()
    assert peer.sip is not None
    for path in ("garbage!!", "msrp://127.0.0.1:99999/s;tcp", "msrp://[zzzz::1]:7/s;tcp"):
        req = peer.sip.new_request(
            "INVITE",
            f"sip:alice@127.0.0.1:{node.sip('udp')[1]}",
            from_=f"<sip:bob@127.0.0.1:{peer.sip_port}>",
            to=f"<sip:{page.aor()}>",
            body=offer_with_path(path, 7),
            content_type="application/sdp",
            headers=[("Contact", f"<{peer.sip.contact_uri('UDP')}>")],
        )
        response, dialog = await peer.sip.invite(req, Address("UDP", *node.sip("udp")))
        assert dialog is None
        assert (response.status, response.reason) == (400, "Bad MSRP Path"), node.output()
    await logged(node, r"rejected INVITE with 400 Bad MSRP Path", count=3)
    assert await asyncio.to_thread(mi_sessions, node) == []
    assert "Traceback" not in node.output()
    await assert_serving(node, page, good, "bad-path")


async def test_replacing_a_session_whose_sip_peer_went_silent_is_answered_at_once(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser
) -> None:
    """The issue's ghost, on the wire: A's SIP side is gone (its Contact swallows the BYE,
    64*T1 = 32 s), its MSRP connection stays. B, then C, INVITE for the same key: each is
    answered at once; the table holds C only; A's and B's legs closing end nobody; C
    delivers."""
    node = gateway(MSRPGW_SIP__T1="0.5", MSRPGW_SIP__T2="4")
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        contact = f"sip:bob@127.0.0.1:{silent.getsockname()[1]}"
        to = f"alice@127.0.0.1:{page.port}"
        handles = []
        for name in ("A", "B", "C"):
            loop = asyncio.get_running_loop()
            started = loop.time()
            status, handle = await peer.call(
                node.sip("udp"), to=to, contact=contact if name != "C" else None
            )
            assert status == 200 and handle is not None, node.output()
            assert loop.time() - started < 3.0, f"{name} waited for a BYE"
            handles.append(handle)
        listed = await asyncio.to_thread(mi_sessions, node)
        assert len(listed) == 1, listed
        for old in handles[:2]:
            old.close("peer closes")
        await asyncio.sleep(0.3)
        outcome = await handles[2].send(b"from C", "text/plain", success_report=True)
        assert type(outcome).__name__ == "MessageDelivered", (outcome, node.output())
        assert [m.body for m in page.messages] == [b"from C"]
        assert len(await asyncio.to_thread(mi_sessions, node)) == 1
    finally:
        silent.close()


# -- 12. reassembly memory: what arrives, within a node-wide budget (issue 16 §2) ---------------
async def test_chunks_declaring_64k_hold_their_bytes_and_the_node_budget_answers_413(
    gateway: Callable[..., GatewayProcess], page: PageUser, peer: MsrpUser, good: MsrpUser
) -> None:
    """The issue's attack (sessions x 64 one-byte chunks each declaring `1-1/65536`) held a
    64 KiB buffer per chunk: 40 sessions took +159 MiB. Now each holds its byte, and past
    msrp.max_reassembly_bytes (here 64 KiB: the chunks below would have been 16 MiB) a chunk
    gets 413."""
    node = gateway(MSRPGW_MSRP__MAX_REASSEMBLY_BYTES="65536", MSRPGW_MSRP__MAX_CHUNK_SIZE="16384")
    sessions = [await open_session(node, peer, page, f"amp{i}") for i in range(5)]
    try:
        for raw, gw_uri, local in sessions[:4]:
            for _ in range(64):
                frame = Frame.request(
                    "SEND",
                    [gw_uri],
                    [local],
                    headers=[("Message-ID", new_transaction_id()), ("Byte-Range", "1-1/65536")],
                    body=b"x",
                    content_type="text/plain",
                    flag="+",
                )
                await raw.send(frame)
                answer = await raw.read_frame()
                assert answer.status == 200, answer
        assert node.metric("msrpgw_msrp_reassembly_bytes") == 4 * 64
        raw, gw_uri, local = sessions[4]  # (each of the others has 64 messages open: its own cap)
        mid = new_transaction_id()
        # a 64 KiB message in 16 KiB chunks: its last would pass 64 KiB with the 256 held
        for start, expected in ((1, 200), (16385, 200), (32769, 200), (49153, 413)):
            big = Frame.request(
                "SEND",
                [gw_uri],
                [local],
                headers=[
                    ("Message-ID", mid),
                    ("Byte-Range", f"{start}-{start + 16383}/65536"),
                ],
                body=b"y" * 16384,
                content_type="text/plain",
                flag="+" if start < 49153 else "$",
            )
            await raw.send(big)
            answer = await raw.read_frame()
            assert (answer.status, answer.comment) == (
                expected,
                "OK" if expected == 200 else "reassembly memory full",
            )
        assert node.metric("msrpgw_msrp_reassembly_refused_total") == 1
    finally:
        for raw, _, _ in sessions:
            await raw.close()
    await asyncio.sleep(0.5)  # the sessions end: what they held goes back
    assert node.metric("msrpgw_msrp_reassembly_bytes") == 0
    await assert_serving(node, page, good, "reassembly-budget")
