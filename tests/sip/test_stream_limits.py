"""SIP TCP connection limits on real sockets (issue 16 §2): a cap with a per-address share,
idle connections closed, and a message that takes too long to arrive (slowloris) too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gw.sip.message import Request, Response, parse_message
from gw.sip.transaction import Address
from gw.sip.transport import ListenSpec, StreamLimits, TransportLayer
from tests.support.node import GatewayProcess


async def layer(limits: StreamLimits) -> tuple[TransportLayer, int, list[Request | Response]]:
    got: list[Request | Response] = []
    tl = TransportLayer(lambda message, _source: got.append(message), stream_limits=limits)
    bound = await tl.listen(ListenSpec("TCP", "127.0.0.1", 0))
    return tl, bound.port, got


async def closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), within) == b""
    except (TimeoutError, ConnectionError):
        return False


@pytest.fixture
async def conns() -> AsyncIterator[list[asyncio.StreamWriter]]:
    writers: list[asyncio.StreamWriter] = []
    yield writers
    for w in writers:
        w.close()


async def test_the_cap_and_the_share_of_one_address(conns: list[asyncio.StreamWriter]) -> None:
    tl, port, _ = await layer(StreamLimits(max_connections=5, max_per_ip=3))
    try:
        readers = []
        for source in ["127.0.0.1"] * 4 + ["127.0.0.2"] * 2 + ["127.0.0.3"]:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(source, 0)
            )
            conns.append(writer)
            readers.append(reader)
        closed = [await closed_by_peer(r, 0.3) for r in readers]
        # 4th from .1: its share (3); .3: the cap (5) is reached by 3 + 2
        assert closed == [False, False, False, True, False, False, True]
        assert tl.stats.connections_refused == {"max_per_ip": 1, "max_connections": 1}
        conns[0].close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conns.append(writer)
        assert not await closed_by_peer(reader, 0.3), "a closed one made room again"
    finally:
        await tl.close()


async def test_idle_connections_are_closed_and_keepalives_keep_one_open(
    conns: list[asyncio.StreamWriter],
) -> None:
    tl, port, _ = await layer(StreamLimits(idle_timeout=0.5))
    try:
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
        alive_reader, alive = await asyncio.open_connection("127.0.0.1", port)
        conns += [idle, alive]
        for _ in range(10):  # RFC 5626 CRLF keepalives every 0.15 s
            alive.write(b"\r\n\r\n")
            await asyncio.sleep(0.15)
        assert await closed_by_peer(idle_reader, 0.1)
        assert not alive.is_closing() and not alive_reader.at_eof()
        assert tl.stats.connections_closed == {"idle": 1}
    finally:
        await tl.close()


async def test_a_message_dribbled_byte_by_byte_is_cut_off(
    conns: list[asyncio.StreamWriter],
) -> None:
    tl, port, got = await layer(StreamLimits(read_timeout=0.5, idle_timeout=60))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conns.append(writer)
        head = (
            b"MESSAGE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKs\r\n"
        )
        cut = False
        for byte in head:  # one byte every 50 ms: never idle, never finished
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                cut = True
                break
            if reader.at_eof():
                cut = True
                break
            await asyncio.sleep(0.05)
        assert cut or await closed_by_peer(reader, 0.5)
        assert tl.stats.connections_closed == {"read_timeout": 1} and got == []
    finally:
        await tl.close()


async def test_an_idle_outbound_connection_is_closed_too() -> None:
    accepted: list[asyncio.StreamReader] = []

    async def peer(reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
        accepted.append(reader)

    server = await asyncio.start_server(peer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tl = TransportLayer(lambda _m, _s: None, stream_limits=StreamLimits(idle_timeout=0.4))
    try:
        options = parse_message(
            b"OPTIONS sip:peer@127.0.0.1 SIP/2.0\r\n"
            b"Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKout\r\nMax-Forwards: 70\r\n"
            b"From: <sip:gw@127.0.0.1>;tag=1\r\nTo: <sip:peer@127.0.0.1>\r\nCall-ID: o1\r\n"
            b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        await tl.send(options, Address("TCP", "127.0.0.1", port))
        assert tl.open_streams == 1
        data = await asyncio.wait_for(accepted[0].read(), 2.0)  # all, to the close
        assert data.startswith(b"OPTIONS ") and accepted[0].at_eof()
        await asyncio.sleep(0.05)
        assert tl.open_streams == 0 and tl.stats.connections_closed == {"idle": 1}
    finally:
        await tl.close()
        server.close()


async def test_a_node_applies_its_sip_tcp_settings() -> None:
    """The config keys reach the listener: sip.tcp_max_connections_per_ip = 2."""
    node = GatewayProcess(env={"MSRPGW_SIP__TCP_MAX_CONNECTIONS_PER_IP": "2"})
    await asyncio.to_thread(node.start)
    writers = []
    try:
        readers = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection(*node.sip("tcp"))
            readers.append(reader)
            writers.append(writer)
        assert [await closed_by_peer(r, 0.5) for r in readers] == [False, False, True]
        await asyncio.sleep(1.2)  # the refusal's log line
        assert "max_per_ip reached" in node.output()
    finally:
        for w in writers:
            w.close()
        assert await asyncio.to_thread(node.stop) == 0
