"""The management HTTP server: MI JSON-RPC at /mi, /healthz, /readyz, /metrics, optional token.

Our own small HTTP/1.1 server on asyncio streams (no runtime dependency): keep-alive, routing
by method and path, explicit limits (see `Limits`), and a precise status for bad input.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress

from gw.logs import Throttle
from gw.mgmt.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from gw.mgmt.metrics import Registry
from gw.mgmt.mi import MiRegistry
from gw.mgmt.wire import (
    Head,
    HttpError,
    Limits,
    Request,
    encode_response,
    read_body,
    read_head,
)

__all__ = ["Handler", "Limits", "MgmtServer", "ReadyCheck", "Reply", "Request", "parse_listen"]

Reply = tuple[int, Mapping[str, str], bytes]
Handler = Callable[[Request], Awaitable[Reply]]
# True when ready; False or a reason string when not. May be async (e.g. a store ping).
ReadyCheck = Callable[[], bool | str | Awaitable[bool | str]]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})  # probes never need the token
_TEXT = {"Content-Type": "text/plain; charset=utf-8"}
_log = logging.getLogger("gw.mgmt.http")


def parse_listen(listen: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); port 0 lets the OS pick."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host, int(port)


def text_reply(status: int, text: str, headers: Mapping[str, str] | None = None) -> Reply:
    return status, {**_TEXT, **(headers or {})}, (text + "\n").encode()


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After an error reply, half-close and drain what the client still sends (briefly), so
    closing with unread input does not reset the connection before the reply is read."""
    with suppress(Exception):
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(1.0):
            while await reader.read(65536):
                pass


class MgmtServer:
    """HTTP management endpoint. `mi` and `metrics` are created empty when not given; the
    gateway registers its MI commands and metrics on `server.mi` / `server.metrics`."""

    def __init__(
        self,
        listen: str,
        token: str = "",
        *,
        mi: MiRegistry | None = None,
        metrics: Registry | None = None,
        ready: ReadyCheck | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._token = token.encode()
        self.mi = mi if mi is not None else MiRegistry()
        self.metrics = metrics if metrics is not None else Registry()
        self._ready = ready
        self.limits = limits or Limits()
        self._routes: dict[str, dict[str, Handler]] = {}
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        # Connections waiting for a request head, oldest first: at the connection cap the
        # oldest of them makes room, so idle clients can never lock out a probe.
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self.evicted = 0  # idle connections closed to make room
        self._evict_log = Throttle()
        self.route("GET", "/healthz", self._healthz)
        self.route("GET", "/readyz", self._readyz)
        self.route("GET", "/metrics", self._metrics)
        self.route("POST", "/mi", self._mi)

    def route(self, method: str, path: str, handler: Handler) -> None:
        """Serve `method path` with `handler` (GET routes answer HEAD too)."""
        self._routes.setdefault(path, {})[method.upper()] = handler

    async def start(self) -> tuple[str, int]:
        """Bind and serve; returns the bound (host, port), useful with port 0."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=self.limits.max_header_bytes
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self.host, self.port = host, port
        _log.info("management API listening on %s:%d", host, port)
        return host, port

    async def close(self) -> None:
        """Stop accepting, drop open connections, wait until they are gone."""
        if self._server is not None:
            self._server.close()
        conns = list(self._conns)
        for task in conns:
            task.cancel()
        await asyncio.gather(*conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            if len(self._conns) > self.limits.max_connections and not self._evict_idle():
                await self._send(writer, text_reply(503, "too many connections"), False, False)
                return
            wait = self.limits.read_timeout
            while await self._one(reader, writer, wait):
                wait = self.limits.idle_timeout
        except (ConnectionError, TimeoutError):
            pass
        except Exception:
            _log.exception("management connection failed")
        finally:
            self._conns.discard(task)
            self._waiting.pop(writer, None)
            writer.close()
            with suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    def _evict_idle(self) -> bool:
        """Close the connection that has waited longest for a request (a Kubernetes probe
        must never queue behind, or be refused by, idle clients); False if none waits."""
        for victim in self._waiting:
            del self._waiting[victim]
            # Closed, not its task cancelled: its read sees the end and the task ends as
            # for any client that leaves (a cancelled one is logged with a traceback).
            victim.transport.abort()
            self.evicted += 1
            left_out = self._evict_log.ready()
            if left_out is not None:
                _log.warning(
                    "management API at %d connections: closed the longest idle one (%d so far)",
                    self.limits.max_connections,
                    self.evicted,
                )
            return True
        return False

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, wait: float
    ) -> bool:
        """Serve one request; True to keep the connection for another."""
        try:
            self._waiting[writer] = None
            try:
                head = await read_head(reader, self.limits, wait)
            finally:
                self._waiting.pop(writer, None)
            if head is None:
                return False
            await self._expect(writer, head)
            body = await read_body(reader, head)
            if body is None:
                return False
        except HttpError as exc:
            await self._send(writer, text_reply(exc.status, exc.detail), False, False)
            await _linger(reader, writer)
            return False
        request = Request(head.method, head.path, head.query, head.headers, body)
        reply = await self._dispatch(request)
        await self._send(writer, reply, head.keep_alive, head.method == "HEAD")
        return head.keep_alive

    async def _expect(self, writer: asyncio.StreamWriter, head: Head) -> None:
        expect = head.headers.get("expect")
        if expect is None:
            return
        if expect.lower() != "100-continue":
            raise HttpError(417, "only 'Expect: 100-continue' is supported")
        if head.version >= (1, 1) and head.content_length:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def _send(
        self, writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool, head_only: bool
    ) -> None:
        status, headers, body = reply
        data = encode_response(status, headers, body, keep_alive=keep_alive, head_only=head_only)
        writer.write(data)
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()

    async def _dispatch(self, req: Request) -> Reply:
        if self._token and req.path not in PUBLIC_PATHS and not self._authorized(req):
            return text_reply(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        methods = self._routes.get(req.path)
        if methods is None:
            return text_reply(404, f"no such path: {req.path}")
        handler = methods.get(req.method)
        if handler is None and req.method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allow = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            return text_reply(405, f"{req.method} not allowed", {"Allow": ", ".join(allow)})
        try:
            async with asyncio.timeout(self.limits.handler_timeout):
                return await handler(req)
        except TimeoutError:
            _log.error("management handler for %s %s timed out", req.method, req.path)
            return text_reply(503, "handler timed out")
        except Exception:
            _log.exception("management handler for %s %s failed", req.method, req.path)
            return text_reply(500, "internal error")

    def _authorized(self, req: Request) -> bool:
        scheme, _, credentials = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(credentials.strip().encode("latin-1"), self._token)

    async def _healthz(self, req: Request) -> Reply:
        return text_reply(200, "ok")

    async def _readyz(self, req: Request) -> Reply:
        if self._ready is None:
            return text_reply(200, "ready")
        try:
            async with asyncio.timeout(self.limits.ready_timeout):
                result = self._ready()
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError:
            return text_reply(503, "readiness check timed out")
        except Exception as exc:
            _log.warning("readiness check failed: %r", exc)
            return text_reply(503, f"readiness check failed: {type(exc).__name__}")
        if result is True:
            return text_reply(200, "ready")
        return text_reply(503, result if isinstance(result, str) and result else "not ready")

    async def _metrics(self, req: Request) -> Reply:
        return 200, {"Content-Type": METRICS_CONTENT_TYPE}, self.metrics.render().encode()

    async def _mi(self, req: Request) -> Reply:
        if not req.body:
            return text_reply(400, "empty request")  # as OpenSIPS mi_http
        out = await self.mi.handle(req.body)
        if out is None:
            return 202, {}, b""  # notifications only: OpenSIPS answers 202 with no body
        return 200, {"Content-Type": "application/json"}, out
