"""`RelayLink`: a `RelayClient` (gw/msrp/relay.py) run over a bare stream, for tests.

The node runs its relay client on one of its MSRP connections (`MsrpEndpoint.use_relay`);
tests that talk to a relay (ours in-process, Kamailio's msrp module) without an endpoint
open a stream themselves and run the sans-I/O client on it here: AUTH, the refresh timer,
and every other frame on that connection handed to a callback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
import time
from collections.abc import Callable

from gw.msrp.frame import Frame, FrameError, FrameParser, FrameReceived, make_response, serialize
from gw.msrp.relay import Authenticated, AuthFailed, RelayAuthError, RelayClient, RelayEvent
from gw.msrp.uri import MsrpUri

__all__ = ["RelayLink", "connect_relay"]

log = logging.getLogger(__name__)


class RelayLink:
    """Runs a `RelayClient` over a stream the caller opened to the relay.

    Frames that are not AUTH responses go to `on_frame` (inbound SENDs the
    relay delivers, responses to what you `send`). A request that fails to
    parse is answered with the parser's code; a fatal framing error closes
    the link. Events (grants, refreshes, failures) go to `on_event`.
    """

    def __init__(
        self,
        client: RelayClient,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        on_frame: Callable[[Frame], None] | None = None,
        on_event: Callable[[RelayEvent], None] | None = None,
        parser: FrameParser | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._reader = reader
        self._writer = writer
        self._on_frame = on_frame
        self._on_event = on_event
        self._parser = parser or FrameParser()
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: list[asyncio.Future[RelayEvent]] = []
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def path(self, local_uri: MsrpUri | None = None) -> tuple[MsrpUri, ...]:
        return self.client.path(local_uri)

    async def authenticate(self, timeout: float | None = None) -> Authenticated:
        """Start the link if needed, AUTH, and return the grant.

        Raises RelayAuthError on refusal, no answer or a lost connection.
        """
        if self._closed:
            raise RelayAuthError(AuthFailed(None, "link closed"))
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._read_loop(), name="msrp-relay-read"),
                asyncio.create_task(self._timer_loop(), name="msrp-relay-timer"),
            ]
        waiter = self.next_event()
        self.client.start(self._clock())
        self._flush()
        async with asyncio.timeout(timeout):
            event = await waiter
        if isinstance(event, AuthFailed):
            raise RelayAuthError(event)
        return event

    def next_event(self) -> asyncio.Future[RelayEvent]:
        """A future for the next event (useful to await a refresh)."""
        fut: asyncio.Future[RelayEvent] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return fut

    def send(self, frame: Frame) -> None:
        """Write a frame on the relay connection (ValueError if unserializable)."""
        if self._closed:
            raise ConnectionError("relay link closed")
        self._writer.write(serialize(frame))

    async def drain(self) -> None:
        await self._writer.drain()

    async def close(self) -> None:
        """Stop refreshing, close the connection and wait for the tasks to end."""
        self.client.close()
        self._mark_closed()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks.clear()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    def _mark_closed(self) -> None:
        """Synchronous part of closing: safe from the read loop's own finally."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._wake.set()
        self._dispatch(self.client.connection_lost())
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(AuthFailed(None, "relay connection closed"))

    def _flush(self) -> None:
        for frame in self.client.frames_to_send():
            if not self._closed:
                self._writer.write(serialize(frame))
        self._wake.set()

    def _dispatch(self, events: list[RelayEvent]) -> None:
        for event in events:
            log.info("msrp relay %s: %s", self.client.relay_uri, event)
            waiters, self._waiters = self._waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(event)
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:
                    log.exception("msrp relay %s: on_event failed", self.client.relay_uri)

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for ev in self._parser.feed(data):
                    if isinstance(ev, FrameReceived):
                        self._frame(ev.frame)
                    else:
                        self._frame_error(ev)
                if self._parser.closed:
                    break
        except (ConnectionError, OSError) as exc:
            log.info("msrp relay %s: connection error %s", self.client.relay_uri, exc)
        finally:
            self._mark_closed()

    def _frame(self, frame: Frame) -> None:
        if self.client.handles(frame):
            self._dispatch(self.client.receive(frame, self._clock()))
            self._flush()
        elif self._on_frame is not None:
            try:
                self._on_frame(frame)
            except Exception:  # a callback bug must not kill the connection
                log.exception("msrp relay %s: on_frame failed", self.client.relay_uri)

    def _frame_error(self, err: FrameError) -> None:
        req = err.request
        if req is None or req.method is None:
            self._dispatch(self.client.receive_unreadable(err.tid, err.reason))
            return
        if req.method == "REPORT" or self._closed:
            return
        with contextlib.suppress(ValueError):
            self._writer.write(serialize(make_response(req, err.code, err.reason)))

    async def _timer_loop(self) -> None:
        while not self._closed:
            deadline = self.client.next_refresh(self._clock())
            if deadline is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            delay = deadline - self._clock()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
                continue
            self._dispatch(self.client.on_timer(self._clock()))
            self._flush()
            await asyncio.sleep(0)


async def connect_relay(
    client: RelayClient,
    *,
    ssl: _ssl.SSLContext | None = None,
    host: str | None = None,
    port: int | None = None,
    on_frame: Callable[[Frame], None] | None = None,
    on_event: Callable[[RelayEvent], None] | None = None,
    timeout: float | None = 30.0,
) -> RelayLink:
    """Open TCP (or TLS with `ssl`, an SSLContext) to the relay URI's host:port
    (or `host`/`port`), authenticate, and return the running link.

    Raises RelayAuthError if AUTH fails, OSError if the connection fails.
    """
    target_host = host or client.relay_uri.host
    target_port = port or client.relay_uri.port or 2855
    reader, writer = await asyncio.open_connection(target_host, target_port, ssl=ssl)
    link = RelayLink(client, reader, writer, on_frame=on_frame, on_event=on_event)
    try:
        await link.authenticate(timeout)
    except BaseException:
        await link.close()
        raise
    return link
