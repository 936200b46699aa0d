"""A session-mode IM client for tests: a gw.sip UA plus a gw.msrp endpoint.

It answers the gateway's INVITEs (or sends its own), keeps the MSRP sessions,
and records every message it receives. Behaviour knobs let tests script failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import MessageReceived, SessionEvent
from gw.msrp.uri import MsrpUri
from gw.sip.dialog import Dialog
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Response
from gw.sip.sdp import (
    MsrpMedia,
    build_msrp_answer,
    build_msrp_offer,
    find_msrp_media,
    parse_sdp,
    we_connect,
)
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec


@dataclass
class Received:
    content_type: str
    body: bytes
    message_id: str
    session_id: str = ""  # our MSRP session (the a=path) it arrived on


@dataclass
class Offered:
    """The gateway's answer to our INVITE, before any MSRP connection is made."""

    response: Response
    dialog: Dialog | None
    local_uri: MsrpUri  # our a=path (what the gateway expects as From-Path)
    media: MsrpMedia | None  # the gateway's MSRP stream (its a=path, a=setup)

    @property
    def status(self) -> int:
        return self.response.status


@dataclass
class MsrpUser:
    invite_status: int = 200
    accept_types: list[str] = field(default_factory=lambda: ["text/plain"])
    sip: SipEndpoint | None = None
    msrp: MsrpEndpoint | None = None
    sessions: list[MsrpHandle] = field(default_factory=list)
    dialogs: list[Dialog] = field(default_factory=list)
    invites: list[IncomingRequest] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    byes: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    answer_path: str | None = None  # override a=path in our answer (e.g. a dead port)
    # a=accept-types we advertise in SDP (default: accept_types). Advertising more than
    # the session accepts makes our MSRP session refuse the gateway's SEND with 415.
    advertise_types: list[str] | None = None
    # Success REPORTs for messages that ask for one (Success-Report: yes), after report_delay
    # seconds; False plays a user that never reports.
    success_reports: bool = True
    report_delay: float = 0.0
    reports_sent: int = 0
    # Answering the gateway's INVITEs: after answer_delay seconds, or never (the gateway's
    # CANCEL ends the transaction with 487, counted in `cancels`).
    answer_delay: float = 0.0
    never_answer: bool = False
    cancels: int = 0

    async def start(self) -> None:
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)), self._handle)
        await self.sip.start([ListenSpec("UDP", "127.0.0.1", 0), ListenSpec("TCP", "127.0.0.1", 0)])
        self.msrp = MsrpEndpoint("127.0.0.1", 0)
        await self.msrp.start()

    async def close(self) -> None:
        if self.msrp is not None:
            await self.msrp.close()
        if self.sip is not None:
            await self.sip.close()

    @property
    def sip_port(self) -> int:
        assert self.sip is not None
        return self.sip.local("UDP").port

    def uri(self, user: str = "bob") -> str:
        return f"sip:{user}@127.0.0.1:{self.sip_port}"

    def _on_event(self, event: SessionEvent, handle: MsrpHandle | None = None) -> None:
        if isinstance(event, MessageReceived):
            sid = (handle.local_uri.session_id or "") if handle is not None else ""
            self.received.append(Received(event.content_type, event.body, event.message_id, sid))
            self.arrived.set()
            if handle is not None and event.success_report and self.success_reports:
                asyncio.get_running_loop().call_later(
                    self.report_delay, self._report, handle, event.message_id
                )

    def _report(self, handle: MsrpHandle, message_id: str) -> None:
        if handle.report_success(message_id):
            self.reports_sent += 1

    def _listener(self) -> tuple[Callable[[SessionEvent], None], list[MsrpHandle]]:
        """An on_event callback that knows its session (bound once it is created)."""
        box: list[MsrpHandle] = []

        def on_event(event: SessionEvent) -> None:
            self._on_event(event, box[0] if box else None)

        return on_event, box

    def _session(
        self, peer_path: list[str], local: MsrpUri, role: str, peer_types: list[str]
    ) -> MsrpHandle:
        assert self.msrp is not None
        on_event, box = self._listener()
        handle = self.msrp.create_session(
            peer_path,
            local_uri=local,
            role=role,
            accept_types=self.accept_types,
            on_event=on_event,
            peer_accept_types=peer_types,
        )
        box.append(handle)
        return handle

    async def _handle(self, incoming: IncomingRequest) -> None:
        req = incoming.request
        if req.method == "ACK":
            return
        if req.method == "BYE":
            self.byes += 1
            incoming.respond(200)
            return
        if req.method == "CANCEL":
            self.cancels += 1  # the endpoint answered it (200, and 487 to the INVITE)
            return
        if req.method != "INVITE":
            incoming.respond(405)
            return
        self.invites.append(incoming)
        if self.never_answer:
            return
        if self.answer_delay:
            await asyncio.sleep(self.answer_delay)
            if incoming.final_sent:  # cancelled meanwhile
                return
        if self.invite_status != 200:
            incoming.respond(self.invite_status)
            return
        assert self.msrp is not None
        offer_sdp = parse_sdp(req.body)
        media = find_msrp_media(offer_sdp)
        assert media is not None
        local = self.msrp.new_local_uri()
        answer = build_msrp_answer(
            media,
            address="127.0.0.1",
            port=self.msrp.uri.port or 0,
            path=[self.answer_path or str(local)],
            accept_types=self.advertise_types or self.accept_types,
            setup="passive" if media.setup else None,
            offer_sdp=offer_sdp,
        )
        handle = self._session(media.path, local, "passive", media.accept_types)
        self.sessions.append(handle)
        incoming.respond(200, body=answer.to_bytes(), content_type="application/sdp")

    async def offer(
        self,
        gateway: tuple[str, int],
        *,
        to: str,
        from_user: str = "bob",
        contact: str | None = None,
    ) -> Offered:
        """INVITE the gateway with an MSRP offer (a=setup:actpass); do not connect.
        `contact`: where the dialog's requests go (default: this user's SIP endpoint)."""
        assert self.sip is not None and self.msrp is not None
        local = self.msrp.new_local_uri()
        offer = build_msrp_offer(
            address="127.0.0.1",
            port=self.msrp.uri.port or 0,
            path=[str(local)],
            accept_types=self.advertise_types or self.accept_types,
            setup="actpass",
        )
        to_user = to.split("@", 1)[0]
        req = self.sip.new_request(
            "INVITE",
            f"sip:{to_user}@{gateway[0]}:{gateway[1]}",
            from_=f"<sip:{from_user}@127.0.0.1:{self.sip_port}>",
            to=f"<sip:{to}>",
            body=offer.to_bytes(),
            content_type="application/sdp",
            headers=[("Contact", f"<{contact or self.sip.contact_uri('UDP')}>")],
        )
        response, dialog = await self.sip.invite(req, Address("UDP", *gateway))
        if dialog is None:
            return Offered(response, None, local, None)
        self.dialogs.append(dialog)
        return Offered(response, dialog, local, find_msrp_media(parse_sdp(response.body)))

    async def call(
        self,
        gateway: tuple[str, int],
        *,
        to: str,
        from_user: str = "bob",
        contact: str | None = None,
    ) -> tuple[int, MsrpHandle | None]:
        """Set up a session towards the gateway (the msrp_gw_answer direction)."""
        assert self.msrp is not None
        offered = await self.offer(gateway, to=to, from_user=from_user, contact=contact)
        if offered.dialog is None:
            return offered.status, None
        media = offered.media
        assert media is not None
        active = we_connect(we_offered=True, offer="actpass", answer=media.setup)
        handle = self._session(
            media.path, offered.local_uri, "active" if active else "passive", media.accept_types
        )
        await handle.connect(timeout=5)
        self.sessions.append(handle)
        return offered.status, handle

    async def reoffer(self, dialog: Dialog) -> tuple[Response, MsrpHandle | None]:
        """re-INVITE in `dialog` with a new MSRP offer (a fresh a=path, a=setup:actpass);
        on 2xx open the new MSRP session as the answer says. The old one stays open."""
        assert self.sip is not None and self.msrp is not None
        local = self.msrp.new_local_uri()
        offer = build_msrp_offer(
            address="127.0.0.1",
            port=self.msrp.uri.port or 0,
            path=[str(local)],
            accept_types=self.advertise_types or self.accept_types,
            setup="actpass",
        )
        response = await self.sip.in_dialog(
            dialog, "INVITE", body=offer.to_bytes(), content_type="application/sdp"
        )
        if not 200 <= response.status < 300:
            return response, None
        media = find_msrp_media(parse_sdp(response.body))
        assert media is not None
        active = we_connect(we_offered=True, offer="actpass", answer=media.setup)
        handle = self._session(
            media.path, local, "active" if active else "passive", media.accept_types
        )
        await handle.connect(timeout=5)
        self.sessions.append(handle)
        return response, handle

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        async def _wait() -> None:
            while len(self.received) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.received
