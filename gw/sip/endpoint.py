"""The asyncio SIP endpoint: transports + transaction layer + dialog layer, one object.

A thin adapter: the protocol rules live in the sans-I/O cores, `TransactionLayer`
(transaction.py: §17 machines, matching, retransmissions, CANCEL) and `DialogLayer`
(dialogs.py: 481 for unknown dialogs, 2xx retransmission until ACK, ACK for 2xx and
its retransmissions). This module feeds them what the transports receive and the time,
carries out the `Send`s they return, runs one loop timer at their next deadline, and
offers the transaction user an awaitable `request()` plus a callback for incoming
requests. What is left here is addressing: next hops, the outbound proxy, Vias, and
the move of a large request from UDP to TCP (§18.1.1).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import itertools
import logging
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from gw.sip.dialog import Dialog, DialogError, DialogId, new_tag
from gw.sip.dialogs import AckMissing, DialogEvent, DialogLayer, Refusal
from gw.sip.message import (
    Limits,
    LocalFailure,
    Request,
    Response,
    SipParseError,
    reason_phrase,
)
from gw.sip.transaction import (
    AckReceived,
    AckTimeout,
    Address,
    Event,
    RequestReceived,
    ResponseReceived,
    Send,
    StrayResponse,
    Terminated,
    TimedOut,
    Timers,
    TransactionLayer,
    TransportFailed,
    TxKey,
    build_response,
    new_branch,
    response_address,
)
from gw.sip.transport import ListenSpec, SipTransportError, StreamLimits, TransportLayer
from gw.sip.uri import NameAddr, SipSyntaxError, SipUri, Via, parse_uri

__all__ = ["EndpointConfig", "IncomingRequest", "SipEndpoint"]

log = logging.getLogger("gw.sip")

UDP_MTU_LIMIT = 1300  # §18.1.1: larger requests go over a congestion-controlled transport


@dataclass
class EndpointConfig:
    advertised_host: str = ""
    outbound_proxy: str = ""
    timers: Timers = field(default_factory=Timers)
    limits: Limits = field(default_factory=Limits)
    user_agent: str = "msrp-gw"
    tls_server: ssl.SSLContext | None = None
    tls_client: ssl.SSLContext | None = None
    contact_user: str = "gw"
    udp_buffer: int = 0  # SO_RCVBUF/SO_SNDBUF of UDP listeners; 0: the kernel's default
    streams: StreamLimits = field(default_factory=StreamLimits)  # TCP/TLS connection limits


class IncomingRequest:
    """A request handed to the transaction user; `respond` may be called more than once."""

    def __init__(self, endpoint: SipEndpoint, key: TxKey | None, request: Request, source: Address):
        self.endpoint = endpoint
        self.key = key
        self.request = request
        self.source = source
        self.to_tag: str | None = request.to.tag or None
        self.final_sent = False
        self.dialog: Dialog | None = None
        self.cancelled = False

    def respond(
        self,
        status: int,
        reason: str | None = None,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        contact: bool | None = None,
    ) -> Response:
        if self.final_sent:
            raise RuntimeError("final response already sent")
        if status >= 200:
            self.final_sent = True
        if status > 100 and self.to_tag is None:
            self.to_tag = new_tag()
        response = build_response(
            self.request,
            status,
            reason or reason_phrase(status),
            to_tag=self.to_tag if status > 100 else None,
        )
        for name, value in headers:
            response.add(name, value)
        want_contact = (
            contact
            if contact is not None
            else (self.request.method == "INVITE" and 100 < status < 300)
        )
        if want_contact:
            response.add("Contact", f"<{self.endpoint.contact_uri(self.source.transport)}>")
        response.add("Server", self.endpoint.config.user_agent)
        if content_type is not None:
            response.add("Content-Type", content_type)
        response.body = body
        self.endpoint._respond(self, response)
        return response


RequestHandler = Callable[[IncomingRequest], Awaitable[None] | None]


@dataclass
class EndpointStats:
    requests_in: dict[str, int] = field(default_factory=dict)
    responses_out: dict[int, int] = field(default_factory=dict)
    responses_in: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    transport_errors: int = 0
    parse_errors: int = 0


class SipEndpoint:
    def __init__(self, config: EndpointConfig, handler: RequestHandler | None = None) -> None:
        self.config = config
        self.handler = handler
        self.layer = TransactionLayer(config.timers)
        self.transports = TransportLayer(
            self._on_message,
            self._on_parse_error,
            limits=config.limits,
            tls_server=config.tls_server,
            tls_client=config.tls_client,
            udp_buffer=config.udp_buffer,
            stream_limits=config.streams,
        )
        self.dialog_layer = DialogLayer(config.timers)
        self.stats = EndpointStats()
        self._waiters: dict[TxKey, asyncio.Future[Response]] = {}
        self._provisional: dict[TxKey, Callable[[Response], None]] = {}
        self._incoming: dict[TxKey, IncomingRequest] = {}
        # The handle and its deadline: uvloop's call_at returns a plain Handle (no `when()`)
        # for a deadline already past, so the deadline is kept beside it.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._call_ids = itertools.count(1)
        self._call_prefix = secrets.token_hex(6)

    @property
    def dialogs(self) -> dict[DialogId, Dialog]:
        """The endpoint's dialogs by id (kept by the dialog layer)."""
        return self.dialog_layer.dialogs

    # -- lifecycle ---------------------------------------------------------------
    async def start(self, listens: Iterable[ListenSpec]) -> list[Address]:
        self._loop = asyncio.get_running_loop()
        bound = [await self.transports.listen(spec) for spec in listens]
        return bound

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        await self.transports.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # -- addressing ----------------------------------------------------------------
    def local(self, transport: str) -> Address:
        addr = self.transports.local.get(transport)
        if addr is None:
            addr = next(iter(self.transports.local.values()))
        return addr

    def host_for(self, transport: str) -> str:
        host = self.config.advertised_host or self.local(transport).host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"[{host}]" if ":" in host else host

    def contact_uri(self, transport: str = "UDP") -> SipUri:
        addr = self.local(transport)
        params: dict[str, str | None] = {}
        if addr.transport != "UDP":
            params["transport"] = addr.transport.lower()
        scheme = "sips" if addr.transport == "TLS" else "sip"
        host = self.host_for(addr.transport).strip("[]")
        return SipUri(scheme, self.config.contact_user, None, host, addr.port, params)

    async def resolve(self, uri: SipUri) -> Address:
        """Next hop for a URI (RFC 3263 without DNS SRV/NAPTR: A/AAAA only)."""
        hop = _hop(uri)
        if _is_ip_literal(hop.host):
            return hop
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(hop.host, hop.port)
        except OSError as exc:
            raise SipTransportError(f"cannot resolve {hop.host}: {exc}") from exc
        return Address(hop.transport, str(infos[0][4][0]), hop.port)

    def resolve_now(self, uri: SipUri) -> Address | None:
        """`resolve` without a lookup: None when the host is a name (DNS needed)."""
        hop = _hop(uri)
        return hop if _is_ip_literal(hop.host) else None

    # -- building requests --------------------------------------------------------
    def new_request(
        self,
        method: str,
        uri: SipUri | str,
        *,
        from_: NameAddr | str,
        to: NameAddr | str,
        call_id: str | None = None,
        cseq: int = 1,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        max_forwards: int = 70,
    ) -> Request:
        """An out-of-dialog request (§8.1.1) with a fresh From tag and Call-ID;
        `max_forwards` below 70 for one sent on behalf of another (a B2BUA's hop)."""
        if isinstance(uri, str):
            uri = parse_uri(uri)
        frm = _as_name_addr(from_)
        if frm.tag is None:
            frm = frm.with_tag(new_tag())
        req = Request(method=method, uri=uri)
        req.add("Max-Forwards", "70" if max_forwards == 70 else str(max_forwards))
        req.add("From", str(frm))
        req.add("To", str(_as_name_addr(to)))
        req.add("Call-ID", call_id or f"{self._call_prefix}-{next(self._call_ids)}")
        req.add("CSeq", f"{cseq} {method}")
        for name, value in headers:
            req.add(name, value)
        if content_type is not None:
            req.add("Content-Type", content_type)
        req.body = body
        return req

    async def _route(self, request: Request) -> Address:
        """Apply the outbound proxy and Route set; return the next hop (§8.1.2)."""
        return await self.resolve(self._next_hop(request))

    def _next_hop(self, request: Request) -> SipUri:
        """Apply the outbound proxy (once) and the Route set: the URI to send to."""
        if (self.config.outbound_proxy and request.method != "ACK") or (
            self.config.outbound_proxy and not request.get("Route")
        ):
            proxy = parse_uri(self.config.outbound_proxy)
            if request.get("Route") is None or str(proxy) not in (request.get("Route") or ""):
                request.add("Route", f"<{proxy}>", first=True)
        routes = request.routes
        return routes[0].uri if routes else request.uri

    def _add_via(self, request: Request, dest: Address, branch: str | None = None) -> None:
        local = self.local(dest.transport)
        via = Via(
            dest.transport,
            self.host_for(dest.transport).strip("[]"),
            local.port,
            {
                "branch": branch or new_branch(),
                "rport": None,
            },
        )
        request.remove("Via")
        request.add("Via", str(via), first=True)

    # -- client side ---------------------------------------------------------------------
    async def request(
        self,
        request: Request,
        dest: Address | None = None,
        *,
        on_provisional: Callable[[Response], None] | None = None,
        on_sent: Callable[[], None] | None = None,
    ) -> Response:
        """Send a request in a client transaction; return its final response.

        Timeouts come back as a synthesised 408 and transport failures as 503, as §8.1.3
        asks, so callers handle one kind of outcome. `on_sent` is called once the request
        is handed to its transport (or fails before): a caller keeping requests in order
        sends the next one then. A request moved to TCP for its size counts as sent when
        it is answered, since a later one on UDP could arrive first.
        """
        if request.get("User-Agent") is None:
            request.add("User-Agent", self.config.user_agent)
        try:
            if dest is None:
                dest = await self._route(request)
        except (SipTransportError, SipSyntaxError) as exc:
            if on_sent is not None:
                on_sent()
            return self._synthetic(request, 503, f"Cannot Route: {exc}")
        if self._too_big_for_udp(request, dest):
            tcp = Address("TCP", dest.host, dest.port)
            try:
                return await self._request_on(
                    request, tcp, on_provisional, fallback=dest, on_sent=on_sent
                )
            finally:
                if on_sent is not None:
                    on_sent()  # idempotent for its callers: a drain of an empty queue
        # The Via added for sizing is the one sent (a fresh branch either way).
        return await self._request_on(
            request, dest, on_provisional, via_added=True, on_sent=on_sent
        )

    def _too_big_for_udp(self, request: Request, dest: Address) -> bool:
        """Add the Via for `dest`; True when the request has to move from UDP to TCP for
        its size (§18.1.1: not when the transport was chosen, nor without a TCP listener)."""
        self._add_via(request, dest)
        forced = request.uri.transport is not None or dest.transport != "UDP"
        if forced or "TCP" not in self.transports.local:
            return False
        return len(request.to_bytes()) > UDP_MTU_LIMIT

    def request_nowait(
        self, request: Request, *, on_provisional: Callable[[Response], None] | None = None
    ) -> asyncio.Future[Response] | None:
        """`request` without a task when nothing has to be awaited before sending: the next
        hop is an IP address, the transport is UDP or an open stream, and the request fits
        UDP. The future gets the final response (408/503 synthesised, as for `request`).
        None: the caller awaits `request` instead (nothing was sent)."""
        if request.get("User-Agent") is None:
            request.add("User-Agent", self.config.user_agent)
        try:
            dest = self.resolve_now(self._next_hop(request))
        except (SipTransportError, SipSyntaxError):
            return None  # `request` answers it with its 503
        if dest is None or not self.transports.can_send_now(dest):
            return None
        if self._too_big_for_udp(request, dest):
            return None  # moves to TCP: a connection may have to be opened
        return self._start_request(request, dest, on_provisional)

    def _start_request(
        self,
        request: Request,
        dest: Address,
        on_provisional: Callable[[Response], None] | None,
    ) -> asyncio.Future[Response]:
        """Start the client transaction; the future is resolved with its final response."""
        assert self._loop is not None
        fut: asyncio.Future[Response] = self._loop.create_future()
        try:
            key, events = self.layer.send_request(request, dest, self.now())
        except ValueError as exc:
            fut.set_result(self._synthetic(request, 400, str(exc)))
            return fut
        self._waiters[key] = fut
        if on_provisional is not None:
            self._provisional[key] = on_provisional
        fut.add_done_callback(lambda _f: self._forget_waiter(key))
        self._dispatch(events)
        self.arm()
        return fut

    def _forget_waiter(self, key: TxKey) -> None:
        self._waiters.pop(key, None)
        self._provisional.pop(key, None)

    async def _request_on(
        self,
        request: Request,
        dest: Address,
        on_provisional: Callable[[Response], None] | None,
        fallback: Address | None = None,
        *,
        via_added: bool = False,
        on_sent: Callable[[], None] | None = None,
    ) -> Response:
        if not via_added:
            self._add_via(request, dest)
        pending = self._start_request(request, dest, on_provisional)
        if on_sent is not None and fallback is None:
            on_sent()
        response = await pending
        if (
            response.status == 503
            and fallback is not None
            and response.local is LocalFailure.TRANSPORT
        ):
            # §18.1.1: a request moved to TCP for size that cannot connect is retried on UDP.
            return await self._request_on(request, fallback, on_provisional)
        return response

    def _synthetic(self, request: Request, status: int, reason: str) -> Response:
        """A final response made here (§8.1.3.1): 408 on timeout, 503 when the request
        could not be sent, another code when we could not send it or use its answer.
        `Response.local` says which, so callers never take it for the peer's."""
        response = build_response(request, status, reason)
        response.local = (
            LocalFailure.TIMEOUT
            if status == 408
            else LocalFailure.TRANSPORT
            if status == 503
            else LocalFailure.INVALID
        )
        return response

    async def invite(
        self,
        request: Request,
        dest: Address | None = None,
        *,
        on_provisional: Callable[[Response], None] | None = None,
    ) -> tuple[Response, Dialog | None]:
        """Send an INVITE; on 2xx create the dialog and send the ACK (§13.2.2.4)."""
        response = await self.request(request, dest, on_provisional=on_provisional)
        if not 200 <= response.status < 300:
            return response, None
        try:
            dialog, ack = self.dialog_layer.receive_2xx(request, response)
        except DialogError as exc:
            log.warning("2xx to INVITE unusable (%s): no dialog kept", exc)
            return self._synthetic(request, 502, "Bad 2xx Response"), None
        await self._send_ack(ack)
        return response, dialog

    async def _send_ack(self, ack: Request) -> None:
        """Route the ACK for a 2xx (the dialog layer keeps it to answer retransmissions)."""
        try:
            dest = await self._route(ack)
            self._add_via(ack, dest)
        except (SipTransportError, SipSyntaxError) as exc:
            log.warning("cannot send ACK: %s", exc)
            return
        self._dispatch(self.dialog_layer.send_ack(ack, dest))

    async def bye(self, dialog: Dialog) -> Response:
        """End a dialog. It is forgotten whatever the answer (§15.1.1)."""
        self.dialog_layer.end(dialog)
        req = dialog.create_request("BYE")
        return await self.request(req)

    async def in_dialog(
        self, dialog: Dialog, method: str, *, body: bytes = b"", content_type: str | None = None
    ) -> Response:
        req = dialog.create_request(method, body=body, content_type=content_type)
        response = await self.request(req)
        if method == "INVITE" and 200 <= response.status < 300:
            _, ack = self.dialog_layer.receive_2xx(req, response, dialog)
            await self._send_ack(ack)
        return response

    async def cancel(self, invite: Request) -> Response:
        """CANCEL a pending INVITE we sent (§9.1), where the INVITE went."""
        started = self.layer.cancel(invite, self.now())
        if started is None:  # no INVITE transaction: route it as the INVITE was
            routes = invite.routes
            hop = await self.resolve(routes[0].uri if routes else invite.uri)
            dest = Address(invite.top_via.transport, hop.host, hop.port)
            started = self.layer.cancel(invite, self.now(), dest)
            assert started is not None
        key, events = started
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiters[key] = fut
        self._dispatch(events)
        self.arm()
        try:
            return await fut
        finally:
            self._waiters.pop(key, None)

    # -- server side -----------------------------------------------------------------------
    def _respond(self, incoming: IncomingRequest, response: Response) -> None:
        self.stats.responses_out[response.status] = (
            self.stats.responses_out.get(response.status, 0) + 1
        )
        req = incoming.request
        if req.method == "INVITE" and 200 <= response.status < 300:
            dest = response_address(req.top_via, incoming.source)
            dialog = self.dialog_layer.send_2xx(req, response, dest, self.now(), incoming.dialog)
            if dialog is None:
                log.warning("2xx to INVITE %s creates no dialog (From tag, Contact)", req.call_id)
            incoming.dialog = dialog
        if incoming.key is None:  # stateless answer
            self._spawn(self._send_quietly(response, incoming.source))
            return
        events = self.layer.respond(incoming.key, response, self.now())
        if response.status >= 200 and req.method != "INVITE":
            # Done with it: the layer absorbs retransmissions (Timer J) without the TU.
            self._incoming.pop(incoming.key, None)
        self._dispatch(events)
        self.arm()

    async def _send_quietly(self, message: Request | Response, dest: Address) -> None:
        try:
            await self.transports.send(message, dest)
        except SipTransportError as exc:
            self.stats.transport_errors += 1
            log.info("send to %s failed: %s", dest, exc)

    # -- input -------------------------------------------------------------------------------
    def _on_message(self, message: Request | Response, source: Address) -> None:
        now = self.now()
        if isinstance(message, Response):
            self.stats.responses_in[message.status] = (
                self.stats.responses_in.get(message.status, 0) + 1
            )
            self._dispatch(self.layer.receive_response(message, now))
        else:
            self.stats.requests_in[message.method] = (
                self.stats.requests_in.get(message.method, 0) + 1
            )
            self._dispatch(self.layer.receive_request(message, source, now))
        self.arm()

    def _on_parse_error(self, exc: SipParseError, source: Address) -> None:
        self.stats.parse_errors += 1
        partial = exc.partial
        if not isinstance(partial, Request) or partial.method == "ACK":
            return  # responses and ACKs are dropped (§16.3-style silence)
        try:
            response = build_response(partial, exc.code, exc.reason)
        except (SipSyntaxError, ValueError, KeyError):
            return  # not enough of the head to address a response
        self.stats.responses_out[exc.code] = self.stats.responses_out.get(exc.code, 0) + 1
        try:
            dest = self._stateless_dest(partial, source)
            # At once, on the connection it came in on: a framing error closes that
            # connection right after this call, and a task would find it closed.
            if self.transports.send_now(response, dest):
                return
        except (SipSyntaxError, SipTransportError):
            return
        self._spawn(self._send_quietly(response, dest))

    def _stateless_dest(self, request: Request, source: Address) -> Address:
        return response_address(request.top_via, source)

    def _dispatch(self, events: list[Event] | list[DialogEvent]) -> None:
        for event in events:
            if isinstance(event, Send):
                try:
                    if not self.transports.send_now(event.message, event.dest):
                        self._spawn(self._send_event(event))  # a connection to open first
                except SipTransportError as exc:
                    self._send_failed(event, exc)
            elif isinstance(event, ResponseReceived):
                self._on_response(event.key, event.response)
            elif isinstance(event, RequestReceived):
                self._on_request(event)
            elif isinstance(event, StrayResponse):
                self._dispatch(self.dialog_layer.receive_stray(event.response))
            elif isinstance(event, AckReceived):
                self._on_ack(event.request)
            elif isinstance(event, AckMissing):
                log.warning("no ACK for 2xx to INVITE %s; sending BYE", event.call_id)
                if event.dialog is not None:
                    self._spawn(self._hang_up(event.dialog))
            elif isinstance(event, TimedOut):
                self.stats.timeouts += 1
                self._resolve(event.key, self._synthetic(event.request, 408, "Request Timeout"))
            elif isinstance(event, TransportFailed):
                self.stats.transport_errors += 1
                self._resolve(event.key, self._synthetic(event.request, 503, "Transport Error"))
            elif isinstance(event, Terminated):
                self._incoming.pop(event.key, None)
            elif isinstance(event, AckTimeout):
                log.info("no ACK for final response of %s", event.key)

    async def _send_event(self, event: Send) -> None:
        try:
            await self.transports.send(event.message, event.dest)
        except SipTransportError as exc:
            self._send_failed(event, exc)

    def _send_failed(self, event: Send, exc: SipTransportError) -> None:
        self.stats.transport_errors += 1
        log.info("send to %s failed: %s", event.dest, exc)
        if event.key is not None and isinstance(event.message, Request):
            self._dispatch(self.layer.transport_error(event.dest, self.now()))

    async def _hang_up(self, dialog: Dialog) -> None:
        await self.bye(dialog)

    def _on_response(self, key: TxKey, response: Response) -> None:
        if response.status < 200:
            cb = self._provisional.get(key)
            if cb is not None:
                try:
                    cb(response)
                except Exception:
                    log.exception("provisional callback failed")
            return
        self._resolve(key, response)

    def _resolve(self, key: TxKey, response: Response) -> None:
        fut = self._waiters.get(key)
        if fut is not None and not fut.done():
            fut.set_result(response)

    def _on_ack(self, ack: Request) -> None:
        self.dialog_layer.receive_ack(ack)
        self._call_handler(IncomingRequest(self, None, ack, Address("UDP", "", 0)), ack_only=True)

    def _on_request(self, event: RequestReceived) -> None:
        request = event.request
        incoming = IncomingRequest(self, event.key, request, event.source)
        self._incoming[event.key] = incoming
        if request.method == "CANCEL":
            self._on_cancel(incoming, event)
            return
        found = self.dialog_layer.receive_request(request)
        if isinstance(found, Refusal):
            incoming.respond(found.status, found.reason)  # the TU never sees it
            return
        incoming.dialog = found
        self._call_handler(incoming)

    def _on_cancel(self, incoming: IncomingRequest, event: RequestReceived) -> None:
        target = self._incoming.get(event.cancels) if event.cancels is not None else None
        if target is None or target.final_sent:
            incoming.respond(481, "Call/Transaction Does Not Exist")
            return
        incoming.respond(200, "OK")
        target.cancelled = True
        target.respond(487, "Request Terminated")
        self._call_handler(incoming)

    def _call_handler(self, incoming: IncomingRequest, *, ack_only: bool = False) -> None:
        if self.handler is None:
            if not ack_only and incoming.request.method != "ACK":
                incoming.respond(501, "Not Implemented")
            return
        try:
            result = self.handler(incoming)
        except Exception:
            log.exception("request handler failed")
            if not incoming.final_sent and incoming.request.method != "ACK":
                incoming.respond(500, "Server Internal Error")
            return
        if result is not None:
            self._spawn(self._guard(incoming, result))

    async def _guard(self, incoming: IncomingRequest, result: Awaitable[None]) -> None:
        try:
            await result
        except Exception:
            log.exception("request handler failed")
            if not incoming.final_sent and incoming.request.method != "ACK":
                incoming.respond(500, "Server Internal Error")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- timers ----------------------------------------------------------------------------
    def arm(self) -> None:
        """Keep one loop timer at the core's next deadline (no task per timer)."""
        if self._closed or self._loop is None:
            return
        deadline = self.layer.next_deadline()
        other = self.dialog_layer.next_deadline()
        if other is not None and (deadline is None or other < deadline):
            deadline = other
        if deadline is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._fire)
        self._timer_at = deadline

    def _fire(self) -> None:
        self._timer = None
        now = self.now()
        self._dispatch(self.layer.on_timer(now))
        self._dispatch(self.dialog_layer.on_timer(now))
        self.arm()


@functools.lru_cache(maxsize=1024)
def _hop(uri: SipUri) -> Address:
    """Transport, host and port to reach `uri` (the host may still be a name)."""
    transport = "TLS" if uri.scheme == "sips" else (uri.transport or "udp").upper()
    if transport not in ("UDP", "TCP", "TLS"):
        raise SipTransportError(f"unsupported transport {transport}")
    host = uri.params.get("maddr") or uri.host
    return Address(transport, host, uri.port or (5061 if transport == "TLS" else 5060))


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _as_name_addr(value: NameAddr | str) -> NameAddr:
    if isinstance(value, NameAddr):
        return value
    from gw.sip.uri import parse_name_addr

    return parse_name_addr(value)
