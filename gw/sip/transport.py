"""Asyncio adapters for SIP over UDP, TCP and TLS (RFC 3261 §18).

Thin by design: bytes in are framed and parsed by the sans-I/O cores, parsed
messages go to one callback with their source address, and `send` picks the
socket. Stream connections are reused per remote address in both directions,
so responses to a request that came over TCP go back over that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from gw.logs import Throttle
from gw.sip.framing import FramedError, FramedMessage, KeepAlive, StreamFramer
from gw.sip.message import Limits, Request, Response, SipParseError, parse_message
from gw.sip.transaction import Address

__all__ = ["ListenSpec", "SipTransportError", "StreamLimits", "TransportLayer", "parse_listen"]

log = logging.getLogger("gw.sip.transport")

MessageCallback = Callable[[Request | Response, Address], None]
ErrorCallback = Callable[[SipParseError, Address], None]


class SipTransportError(OSError):
    """The message could not be handed to the network (§17.1.4 transport error)."""


@dataclass(frozen=True)
class ListenSpec:
    transport: str  # UDP, TCP, TLS
    host: str
    port: int


def parse_listen(text: str) -> ListenSpec:
    """`udp:127.0.0.1:5060`, `tcp:[::1]:0`, `tls:0.0.0.0:5061`."""
    transport, _, rest = text.partition(":")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    if transport.lower() not in ("udp", "tcp", "tls") or not host or not port.isdigit():
        raise ValueError(f"bad listen address {text!r}: expected transport:host:port")
    return ListenSpec(transport.upper(), host, int(port))


@dataclass(frozen=True)
class StreamLimits:
    """TCP/TLS connections: how many, and how long one may sit idle or spend on a message.
    The names follow Kamailio's and OpenSIPS's `tcp_*` settings (see docs/configuration.md)."""

    max_connections: int = 2048  # inbound connections, all peers together
    max_per_ip: int = 256  # inbound connections from one address
    idle_timeout: float = 120.0  # no byte either way: closed (tcp_connection_lifetime)
    read_timeout: float = 20.0  # from a message's first byte to its last (slowloris)


@dataclass
class _Stats:
    received: int = 0
    sent: int = 0
    parse_errors: int = 0
    dropped_responses: int = 0
    connections_opened: int = 0
    by_code: dict[int, int] = field(default_factory=dict)
    connections_refused: dict[str, int] = field(default_factory=dict)  # by reason
    connections_closed: dict[str, int] = field(default_factory=dict)  # by the limit


class _Datagram(asyncio.DatagramProtocol):
    def __init__(self, layer: TransportLayer) -> None:
        self.layer = layer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        screen = self.layer.udp_screen
        if screen is not None and screen(data, (str(addr[0]), int(addr[1]))):
            return  # answered before parsing (overload: gw.gateway.shedding)
        source = Address("UDP", str(addr[0]), int(addr[1]))
        if not data.strip(b"\r\n"):
            return  # keepalive
        try:
            message = parse_message(data, self.layer.limits)
        except SipParseError as exc:
            self.layer._parse_error(exc, source)
            return
        self.layer._deliver(message, source)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)


class _Stream(asyncio.Protocol):
    def __init__(self, layer: TransportLayer, proto: str, *, inbound: bool = False) -> None:
        self.layer = layer
        self.proto = proto
        self.inbound = inbound
        self.framer = StreamFramer(layer.limits)
        self.transport: asyncio.Transport | None = None
        self.remote: Address | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.admitted = False  # counted in the inbound limits
        self.last_io = 0.0  # loop time of the last byte in or out
        self.reading_since = 0.0  # loop time a partial message started (0: none)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.remote = Address(self.proto, str(peer[0]), int(peer[1]))
        self.last_io = self.layer.now()
        if self.inbound and not self.layer._admit(self):
            self.transport.abort()
            return
        self.layer._register(self.remote, self)

    def data_received(self, data: bytes) -> None:
        assert self.remote is not None
        now = self.last_io = self.layer.now()
        for event in self.framer.feed(data):
            if isinstance(event, FramedMessage):
                self.layer._deliver(event.message, self.remote)
            elif isinstance(event, FramedError):
                self.layer._parse_error(event.error, self.remote)
                if event.fatal and self.transport is not None:
                    self.transport.close()
            elif isinstance(event, KeepAlive) and self.transport is not None:
                self.transport.write(b"\r\n")
        if not self.framer.buffered:
            self.reading_since = 0.0
        elif not self.reading_since:
            self.reading_since = now

    def connection_lost(self, exc: Exception | None) -> None:
        if self.remote is not None:
            self.layer._unregister(self.remote, self)
        if not self.closed.done():
            self.closed.set_result(None)

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise SipTransportError("connection closed")
        self.last_io = self.layer.now()
        self.transport.write(data)


class TransportLayer:
    """All SIP sockets of one node."""

    def __init__(
        self,
        on_message: MessageCallback,
        on_parse_error: ErrorCallback | None = None,
        *,
        limits: Limits | None = None,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        connect_timeout: float = 5.0,
        udp_buffer: int = 0,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        self.on_message = on_message
        # SO_RCVBUF/SO_SNDBUF of UDP listeners (0: the kernel's default, ~208 KiB on Linux,
        # about 100 MESSAGEs: a pause of a few tens of ms under load overflows it, and each
        # drop costs a retransmission 500 ms later).
        self.udp_buffer = udp_buffer
        self.on_parse_error = on_parse_error
        self.limits = limits or Limits()
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.connect_timeout = connect_timeout
        self.stats = _Stats()
        self._parse_log = Throttle()  # one line a second for a flood of bad input
        # Per-session tracing (ops): called with ("in"|"out", message, peer) when set.
        self.tracer: Callable[[str, Request | Response, Address], None] | None = None
        self.local: dict[str, Address] = {}
        self._udp: _Datagram | None = None
        # Overload: called with each UDP datagram before it is parsed; True means it was
        # answered there, statelessly, and is done (gw.gateway.shedding).
        self.udp_screen: Callable[[bytes, tuple[str, int]], bool] | None = None
        self._servers: list[asyncio.Server] = []
        self._streams: dict[Address, _Stream] = {}
        self._connecting: dict[Address, asyncio.Task[_Stream]] = {}
        self.stream_limits = stream_limits or StreamLimits()
        self._inbound: dict[str, int] = {}  # admitted inbound connections, by peer host
        self._inbound_total = 0
        self._all: set[_Stream] = set()  # every open stream, once (for the reaper)
        self._reaper: asyncio.Task[None] | None = None
        self._limit_log = Throttle()

    # -- listening -------------------------------------------------------------
    async def listen(self, spec: ListenSpec) -> Address:
        loop = asyncio.get_running_loop()
        if spec.transport == "UDP":
            _, proto = await loop.create_datagram_endpoint(
                lambda: _Datagram(self), local_addr=(spec.host, spec.port)
            )
            self._udp = proto
            assert proto.transport is not None
            if self.udp_buffer > 0:
                _set_buffers(proto.transport.get_extra_info("socket"), self.udp_buffer)
            sock = proto.transport.get_extra_info("sockname")
        else:
            if spec.transport == "TLS" and self.tls_server is None:
                raise ValueError("tls listener needs a certificate ([tls] cert_file/key_file)")
            ctx = self.tls_server if spec.transport == "TLS" else None
            server = await loop.create_server(
                lambda: _Stream(self, spec.transport, inbound=True), spec.host, spec.port, ssl=ctx
            )
            self._servers.append(server)
            sock = server.sockets[0].getsockname()
        bound = Address(spec.transport, spec.host, int(sock[1]))
        self.local.setdefault(spec.transport, bound)
        log.info("sip listening on %s:%s:%d", spec.transport.lower(), spec.host, bound.port)
        return bound

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for server in self._servers:
            server.close()
        for stream in list(self._streams.values()):
            if stream.transport is not None:
                stream.transport.close()
        for task in self._connecting.values():
            task.cancel()
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    @property
    def udp_socket(self) -> socket.socket | None:
        """The UDP listener's socket (its buffer sizes are ops knobs), or None."""
        udp = self._udp.transport if self._udp is not None else None
        return None if udp is None else udp.get_extra_info("socket")

    # -- sending ---------------------------------------------------------------
    async def send(self, message: Request | Response, dest: Address) -> None:
        if not self.send_now(message, dest):
            stream = await self._stream_for(dest)
            stream.write(self._outgoing(message, dest))

    def send_now(self, message: Request | Response, dest: Address) -> bool:
        """Send at once when no connection has to be opened (UDP, or a stream already up):
        the common case needs no task. False: nothing sent, use `send`."""
        if dest.transport == "UDP":
            udp = self._udp.transport if self._udp is not None else None
            if udp is None:
                raise SipTransportError("no UDP listener")
            udp.sendto(self._outgoing(message, dest), (dest.host, dest.port))
            return True
        stream = self._streams.get(dest)
        if stream is None:
            return False
        stream.write(self._outgoing(message, dest))
        return True

    def _outgoing(self, message: Request | Response, dest: Address) -> bytes:
        """The bytes to write, traced and counted (every send goes through here)."""
        data = message.to_bytes()
        if self.tracer is not None:
            self.tracer("out", message, dest)
        self.stats.sent += 1
        return data

    def send_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        """Raw bytes out of the UDP listener (a stateless answer, gw.sip.stateless)."""
        udp = self._udp.transport if self._udp is not None else None
        if udp is None:
            raise SipTransportError("no UDP listener")
        self.stats.sent += 1
        udp.sendto(data, addr)

    def can_send_now(self, dest: Address) -> bool:
        return dest.transport == "UDP" or dest in self._streams

    async def _stream_for(self, dest: Address) -> _Stream:
        stream = self._streams.get(dest)
        if stream is not None:
            return stream
        task = self._connecting.get(dest)
        if task is None:
            task = asyncio.ensure_future(self._connect(dest))
            self._connecting[dest] = task
            task.add_done_callback(lambda _t: self._connecting.pop(dest, None))
        return await asyncio.shield(task)

    async def _connect(self, dest: Address) -> _Stream:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if dest.transport == "TLS":
            ctx = self.tls_client or ssl.create_default_context()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Stream(self, dest.transport),
                    dest.host,
                    dest.port,
                    ssl=ctx,
                    server_hostname=dest.host if ctx else None,
                ),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise SipTransportError(f"cannot connect to {dest}: {exc}") from exc
        self.stats.connections_opened += 1
        # Register under the address we dialled too (it may differ from peername).
        self._streams[dest] = proto
        return proto

    # -- connection limits ----------------------------------------------------------
    @property
    def open_streams(self) -> int:
        return len(self._all)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def _admit(self, stream: _Stream) -> bool:
        """An inbound connection within the cap and its address's share, else refused."""
        assert stream.remote is not None
        host, limits = stream.remote.host, self.stream_limits
        reason = None
        if self._inbound_total >= limits.max_connections:
            reason = "max_connections"
        elif self._inbound.get(host, 0) >= limits.max_per_ip:
            reason = "max_per_ip"
        if reason is not None:
            refused = self.stats.connections_refused
            refused[reason] = refused.get(reason, 0) + 1
            left_out = self._limit_log.ready()
            if left_out is not None:
                log.warning(
                    "sip %s connection from %s refused: %s reached (%d open, %d from it)%s",
                    stream.proto.lower(),
                    host,
                    reason,
                    self._inbound_total,
                    self._inbound.get(host, 0),
                    f" ({left_out} more refused since the last such line)" if left_out else "",
                )
            return False
        stream.admitted = True
        self._inbound[host] = self._inbound.get(host, 0) + 1
        self._inbound_total += 1
        return True

    def _reap(self) -> None:
        """Close connections idle for `idle_timeout`, and those that began a message more
        than `read_timeout` ago without finishing it."""
        limits, now = self.stream_limits, self.now()
        for stream in list(self._all):
            transport = stream.transport
            if transport is None or transport.is_closing():
                continue
            if stream.reading_since and now - stream.reading_since > limits.read_timeout:
                why = "read_timeout"
            elif now - stream.last_io > limits.idle_timeout:
                why = "idle"
            else:
                continue
            closed = self.stats.connections_closed
            closed[why] = closed.get(why, 0) + 1
            log.info("sip connection to %s closed: %s", stream.remote, why.replace("_", " "))
            transport.close()

    async def _reap_loop(self) -> None:
        limits = self.stream_limits
        interval = max(0.05, min(1.0, limits.read_timeout / 4, limits.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            self._reap()

    # -- callbacks from protocols -------------------------------------------------
    def _register(self, remote: Address, stream: _Stream) -> None:
        self._streams[remote] = stream
        self._all.add(stream)
        if self._reaper is None:
            self._reaper = asyncio.ensure_future(self._reap_loop())

    def _unregister(self, remote: Address, stream: _Stream) -> None:
        for key in [k for k, v in self._streams.items() if v is stream]:
            del self._streams[key]
        self._all.discard(stream)
        if stream.admitted:
            stream.admitted = False
            host = remote.host
            left = self._inbound.get(host, 0) - 1
            if left > 0:
                self._inbound[host] = left
            else:
                self._inbound.pop(host, None)
            self._inbound_total -= 1

    def _deliver(self, message: Request | Response, source: Address) -> None:
        self.stats.received += 1
        if self.tracer is not None:
            self.tracer("in", message, source)
        try:
            self.on_message(message, source)
        except Exception:  # a handler bug must not kill the socket
            log.exception("sip handler failed for %r from %s", message, source)

    def _parse_error(self, exc: SipParseError, source: Address) -> None:
        self.stats.parse_errors += 1
        self.stats.by_code[exc.code] = self.stats.by_code.get(exc.code, 0) + 1
        left_out = self._parse_log.ready()
        if left_out is not None:
            log.warning(
                "sip parse error from %s: %d %s%s",
                source,
                exc.code,
                exc.reason,
                f" ({left_out} more since the last such line)" if left_out else "",
            )
        if self.on_parse_error is not None:
            try:
                self.on_parse_error(exc, source)
            except Exception:
                log.exception("sip parse-error handler failed")


def _set_buffers(sock: Any, size: int) -> None:
    """Ask for `size`-byte receive and send buffers; the kernel caps them (net.core.rmem_max,
    wmem_max) unless the process may force them (CAP_NET_ADMIN). Logs what it got."""
    for opt, force in (
        (socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None)),
        (socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None)),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force or opt, size)
        except (OSError, AttributeError):
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, opt, size)
    with contextlib.suppress(OSError, AttributeError):
        log.info(
            "udp buffers: receive %d, send %d bytes (asked %d)",
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            size,
        )
