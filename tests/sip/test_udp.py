"""The UDP listener on real sockets: responses first, stale requests dropped, screening."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from gw.sip.udp import UdpListener


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pair() -> AsyncIterator[tuple[socket.socket, socket.socket]]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.setblocking(False)
    yield a, b
    b.close()


async def settle(predicate: object, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)


async def test_responses_overtake_requests_queued_before_them(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    listen, peer = pair
    got: list[bytes] = []
    listener = UdpListener(listen, lambda data, addr: got.append(data))
    try:
        for i in range(5):
            peer.sendto(b"MESSAGE sip:x SIP/2.0\r\nn: %d\r\n\r\n" % i, listen.getsockname())
        peer.sendto(b"SIP/2.0 200 OK\r\n\r\n", listen.getsockname())
        await settle(lambda: len(got) == 6)
        assert got[0].startswith(b"SIP/2.0 200"), got
        assert [g[-5:-4] for g in got[1:]] == [b"0", b"1", b"2", b"3", b"4"]  # arrival order
    finally:
        listener.close()


async def test_requests_that_waited_too_long_are_dropped_and_counted(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    listen, peer = pair
    clock = Clock()
    got: list[bytes] = []

    def slow(data: bytes, addr: tuple[str, int]) -> None:
        got.append(data)
        clock.now += 0.3  # each request takes 300 ms of the node's time

    listener = UdpListener(listen, slow, max_queue_delay=0.5, clock=clock)
    try:
        for i in range(4):
            peer.sendto(b"OPTIONS sip:x SIP/2.0\r\nn: %d\r\n\r\n" % i, listen.getsockname())
        await settle(lambda: len(got) + listener.stats.stale_dropped == 4)
        # read together at t=100: the first two are served by t=100.6, the rest are stale
        assert [g[-5:-4] for g in got] == [b"0", b"1"]
        assert listener.stats.stale_dropped == 2
        assert listener.stats.queued_max == 4
    finally:
        listener.close()


async def test_a_screen_answers_a_request_before_it_is_handed_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    listen, peer = pair
    got: list[bytes] = []
    listener = UdpListener(listen, lambda data, addr: got.append(data))
    listener.screen = lambda data, addr: data.startswith(b"BYE")
    try:
        peer.sendto(b"BYE sip:x SIP/2.0\r\n\r\n", listen.getsockname())
        peer.sendto(b"OPTIONS sip:x SIP/2.0\r\n\r\n", listen.getsockname())
        await settle(lambda: len(got) == 1)
        await asyncio.sleep(0.05)
        assert got == [b"OPTIONS sip:x SIP/2.0\r\n\r\n"]
        listener.sendto(b"answer", peer.getsockname())
        await settle(lambda: _readable(peer))
        assert peer.recv(100) == b"answer"
    finally:
        listener.close()


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return False
    return True
