"""A peer that behaves on the wire as OpenSIPS 3.6's msrp_gateway + msrp_ua do.

OpenSIPS is not packaged for Debian, so its observed behaviour is played here
(../shared/FIELD-NOTES.md, "The reference implementation, observed"):

- its SDP has exactly `m=message <port> TCP/MSRP *`, `a=accept-types` and `a=path`:
  no a=setup, so the offerer connects (RFC 4975 §5.4);
- its SENDs are one chunk, `Byte-Range: 1-N/N`, `Failure-Report: no`: never answered;
- as the offerer it opens **two** TCP connections to the answerer's MSRP URI, the
  empty bind SEND on the first and the real SEND on the second;
- as the answerer it gets the gateway's connection, and its own SENDs go out on a new
  connection to the gateway's a=path URI (it keeps no reverse mapping).

SIP goes through gw.sip (only the MSRP wire behaviour matters here); MSRP is written
and read as raw bytes, so the peer does not share the gateway's MSRP code.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from dataclasses import dataclass, field

from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Response
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec

_START = re.compile(rb"MSRP ([A-Za-z0-9.+%=-]+) ([A-Z]+|\d{3})[^\r\n]*\r\n")
_PATH = re.compile(r"^a=path:(.+)$", re.M)


@dataclass
class MsrpFrame:
    tid: str
    method: str  # "SEND", "REPORT", or the status code of a response
    headers: dict[str, str]
    body: bytes
    connection: int  # which of the peer's connections carried it


def _sdp(port: int, path: str) -> bytes:
    """OpenSIPS msrp_ua's SDP: no a=setup, no max-size, no accept-wrapped-types."""
    return (
        "v=0\r\n"
        f"o=- {secrets.randbelow(1 << 30)} 1 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "c=IN IP4 127.0.0.1\r\n"
        "t=0 0\r\n"
        f"m=message {port} TCP/MSRP *\r\n"
        "a=accept-types:text/plain\r\n"
        f"a=path:{path}\r\n"
    ).encode()


def _send(to_path: str, from_path: str, body: bytes, *, content_type: str | None) -> bytes:
    tid = secrets.token_hex(8)
    lines = [
        f"MSRP {tid} SEND",
        f"To-Path: {to_path}",
        f"From-Path: {from_path}",
        f"Message-ID: {secrets.token_hex(8)}",
        f"Byte-Range: 1-{len(body)}/{len(body)}",
        "Failure-Report: no",
    ]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body + f"\r\n-------{tid}$\r\n".encode()
    return ("\r\n".join(lines) + f"\r\n-------{tid}$\r\n").encode()


class _Reader:
    """Splits an MSRP byte stream into frames (enough for the gateway's output)."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, str, dict[str, str], bytes]]:
        self.buffer += data
        frames = []
        while True:
            start = _START.match(self.buffer)
            if start is None:
                return frames
            tid = start.group(1)
            end = re.search(rb"-------" + re.escape(tid) + rb"[$+#]\r\n", self.buffer)
            if end is None:
                return frames
            raw = self.buffer[start.end() : end.start()]
            self.buffer = self.buffer[end.end() :]
            head, _, body = raw.partition(b"\r\n\r\n")
            headers = {}
            for line in head.decode().split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if body.endswith(b"\r\n"):
                body = body[:-2]
            frames.append((tid.decode(), start.group(2).decode(), headers, body))


@dataclass
class OpenSipsLikePeer:
    sip: SipEndpoint | None = None
    received: list[MsrpFrame] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    local_uri: str = ""  # our a=path for the current session
    gateway_path: str = ""  # the gateway's a=path for the current session
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)), self._handle)
        await self.sip.start([ListenSpec("UDP", "127.0.0.1", 0)])
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self.sip is not None:
            await self.sip.close()

    @property
    def msrp_port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def sip_port(self) -> int:
        assert self.sip is not None
        return self.sip.local("UDP").port

    def _new_uri(self) -> str:
        return f"msrp://127.0.0.1:{self.msrp_port}/{secrets.token_hex(6)};tcp"

    # -- as the answerer (the gateway's msg_to_msrp INVITEs us) ------------------------
    async def _handle(self, incoming: IncomingRequest) -> None:
        req = incoming.request
        if req.method in ("ACK", "BYE"):
            if req.method == "BYE":
                incoming.respond(200)
            return
        if req.method != "INVITE":
            incoming.respond(405)
            return
        found = _PATH.search(req.body.decode())
        assert found is not None, req.body
        self.gateway_path = found.group(1).strip()
        self.local_uri = self._new_uri()
        body = _sdp(self.msrp_port, self.local_uri)
        incoming.respond(200, body=body, content_type="application/sdp")

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        await self._read(reader, writer, len(self._writers) - 1)

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        frames = _Reader()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while data := await reader.read(65536):
                for tid, method, headers, body in frames.feed(data):
                    self.received.append(MsrpFrame(tid, method, headers, body, index))
                    self.arrived.set()
                    if method == "SEND" and headers.get("failure-report", "yes") != "no":
                        writer.write(
                            f"MSRP {tid} 200 OK\r\nTo-Path: {headers['from-path']}\r\n"
                            f"From-Path: {headers['to-path'].split()[-1]}\r\n"
                            f"-------{tid}$\r\n".encode()
                        )

    async def wait_sends(self, count: int, timeout: float = 10.0) -> list[MsrpFrame]:
        """The first `count` SENDs with a body that reached us."""

        async def _wait() -> list[MsrpFrame]:
            while True:
                sends = [f for f in self.received if f.method == "SEND" and f.body]
                if len(sends) >= count:
                    return sends
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(_wait(), timeout)

    # -- as the offerer (msg_to_msrp on the OpenSIPS side) ----------------------------
    async def invite(self, gateway: tuple[str, int], *, to: str, from_user: str) -> Response:
        """INVITE the gateway with OpenSIPS's offer; learn the gateway's a=path."""
        assert self.sip is not None
        self.local_uri = self._new_uri()
        to_user = to.split("@", 1)[0]
        req = self.sip.new_request(
            "INVITE",
            f"sip:{to_user}@{gateway[0]}:{gateway[1]}",
            from_=f"<sip:{from_user}@127.0.0.1:{self.sip_port}>",
            to=f"<sip:{to}>",
            body=_sdp(self.msrp_port, self.local_uri),
            content_type="application/sdp",
            headers=[("Contact", f"<{self.sip.contact_uri('UDP')}>")],
        )
        response, _ = await self.sip.invite(req, Address("UDP", *gateway))
        if response.status == 200:
            found = _PATH.search(response.body.decode())
            assert found is not None, response.body
            self.gateway_path = found.group(1).strip()
        return response

    async def open_connection(self) -> int:
        """A new TCP connection to the gateway's MSRP URI (its a=path's authority)."""
        host, port = re.match(r"msrps?://([^:/;]+):(\d+)", self.gateway_path).groups()  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection(host, int(port))
        self._writers.append(writer)
        index = len(self._writers) - 1
        task = asyncio.ensure_future(self._read(reader, writer, index))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return index

    async def bind(self, connection: int) -> None:
        """msrp_ua's empty bind SEND (Byte-Range 1-0/0, Failure-Report: no)."""
        await self._write(
            connection, _send(self.gateway_path, self.local_uri, b"", content_type=None)
        )

    async def send_text(self, connection: int, text: bytes) -> None:
        """One SEND, one chunk, Failure-Report: no: what msg_to_msrp sends."""
        frame = _send(self.gateway_path, self.local_uri, text, content_type="text/plain")
        await self._write(connection, frame)

    async def _write(self, connection: int, data: bytes) -> None:
        writer = self._writers[connection]
        writer.write(data)
        await writer.drain()

    async def close_connection(self, connection: int) -> None:
        writer = self._writers[connection]
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
