"""The SIP UDP listener: our own reader, so that responses overtake requests under overload.

Why not asyncio's datagram endpoint: it hands datagrams over one at a time in arrival order.
Beyond capacity the socket's queue grows to its buffer (megabytes, seconds of traffic), and
the 200 OK of every INVITE we sent waits behind seconds of new MESSAGEs: each set-up in
progress takes seconds, `max_pending_setups` fills with them, and set-ups served per
second collapse (256 in progress at 1.3 s each: 200/s, a third of capacity). A response
finishes work already paid for; a new request only adds work.

So each time the socket is readable we read everything it holds (bounded per pass), answer
the responses first, then take requests in arrival order within a time budget per pass,
coming back to the socket between passes. A request that waited longer than
`max_queue_delay` is dropped unread, counted and logged once a second: its sender has
retransmitted it by then (T1 = 500 ms), and the copy is what we serve; working on the
stale one would only make every later one staler.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["UdpListener", "UdpStats"]

log = logging.getLogger("gw.sip.transport")

Datagram = Callable[[bytes, tuple[str, int]], None]

READ_MAX = 2048  # datagrams read per readable event: one pass cannot starve the loop
BUDGET = 0.01  # seconds of request work per pass before the socket is read again


@dataclass
class UdpStats:
    stale_dropped: int = 0  # requests dropped after `max_queue_delay` in our queue
    send_errors: int = 0
    queued_max: int = 0  # the longest request queue seen (datagrams)


class UdpListener:
    """One bound UDP socket, read and written without an asyncio transport."""

    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Datagram,
        *,
        max_queue_delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.on_datagram = on_datagram
        self.max_queue_delay = max_queue_delay
        self.clock = clock
        self.stats = UdpStats()
        self._loop = asyncio.get_running_loop()
        self._requests: deque[tuple[float, bytes, tuple[str, int]]] = deque()
        self._outbox: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._continue: asyncio.Handle | None = None
        self._stale_logged = -1e9
        self._closed = False
        # Overload: called with each request before it is parsed; True means it was
        # answered there (statelessly) and is done (gw.gateway.shedding).
        self.screen: Callable[[bytes, tuple[str, int]], bool] | None = None
        self._loop.add_reader(sock.fileno(), self._readable)

    def sockname(self) -> tuple[str, int]:
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    # -- receiving ------------------------------------------------------------------------

    def _readable(self) -> None:
        recv = self.sock.recvfrom
        responses: list[tuple[bytes, tuple[str, int]]] = []
        requests = self._requests
        now = self.clock()
        for _ in range(READ_MAX):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("udp receive error: %s", exc)
                break
            if data[:4] in (b"SIP/", b"sip/"):
                responses.append((data, addr))
            else:
                requests.append((now, data, addr))
        if len(requests) > self.stats.queued_max:
            self.stats.queued_max = len(requests)
        deliver = self.on_datagram
        for data, addr in responses:
            deliver(data, addr)
        self._work()

    def _work(self) -> None:
        """Requests in arrival order until the pass's budget is spent, then yield."""
        self._continue = None
        requests = self._requests
        if not requests:
            return
        deliver = self.on_datagram
        screen = self.screen
        clock = self.clock
        start = clock()
        oldest = start - self.max_queue_delay
        stale = 0
        while requests:
            arrived, data, addr = requests[0]
            if arrived < oldest:
                requests.popleft()
                stale += 1
                continue
            requests.popleft()
            if screen is None or not screen(data, addr):
                deliver(data, addr)
            if clock() - start >= BUDGET:
                break
        if stale:
            self._stale(stale)
        if requests and not self._closed:
            self._continue = self._loop.call_soon(self._work)

    def _stale(self, count: int) -> None:
        self.stats.stale_dropped += count
        now = self.clock()
        if now - self._stale_logged >= 1.0:  # one line a second, not one per datagram
            self._stale_logged = now
            log.warning(
                "overload: dropped %d SIP requests that waited over %.0f ms (%d so far); "
                "their retransmissions are served",
                count,
                self.max_queue_delay * 1000,
                self.stats.stale_dropped,
            )

    # -- sending --------------------------------------------------------------------------

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send now; when the socket's buffer is full, queue and send once it is writable."""
        if self._outbox:
            self._outbox.append((data, addr))
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._outbox.append((data, addr))
            self._loop.add_writer(self.sock.fileno(), self._writable)
        except OSError as exc:
            self.stats.send_errors += 1
            log.debug("udp send to %s failed: %s", addr, exc)

    def _writable(self) -> None:
        outbox = self._outbox
        while outbox:
            data, addr = outbox[0]
            try:
                self.sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.stats.send_errors += 1
                log.debug("udp send to %s failed: %s", addr, exc)
            outbox.popleft()
        self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._continue is not None:
            self._continue.cancel()
        self._loop.remove_reader(self.sock.fileno())
        if self._outbox:
            self._loop.remove_writer(self.sock.fileno())
        self._requests.clear()
        self.sock.close()
