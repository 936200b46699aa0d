"""`msrp-gw try`: one message through a running node, both ways, with two users played here.

- A page-mode user (SIP MESSAGE) on one UDP port, an MSRP user (answers INVITEs, speaks MSRP)
  on another. Both are this process, on 127.0.0.1.
- The page-mode user sends "hello from page mode" to the MSRP user through the node: the node
  sets an MSRP session up to the MSRP user and sends the text as an MSRP SEND.
- The MSRP user answers "hello from session mode" on that session: the node sends it back to
  the page-mode user as a SIP MESSAGE.

Exit 0 when both arrived, 1 when one did not (with what happened), 3 when the node did not
answer at all. It is docs/tutorial.md's second step.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field

from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import MessageReceived, SessionEvent
from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Request
from gw.sip.sdp import build_msrp_answer, find_msrp_media, parse_sdp
from gw.sip.transaction import Address
from gw.sip.transport import ListenSpec

__all__ = ["run_rounds", "run_try"]

TO_MSRP = b"hello from page mode"
TO_PAGE = b"hello from session mode"


@dataclass
class _Users:
    """The two users; what each received."""

    page: SipEndpoint | None = None
    msrp_sip: SipEndpoint | None = None
    msrp: MsrpEndpoint | None = None
    at_page: list[Request] = field(default_factory=list)
    at_msrp: list[tuple[MsrpHandle, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    host: str = "127.0.0.1"  # where both listen, and the host of their URIs

    async def start(self) -> None:
        self.page = SipEndpoint(EndpointConfig(user_agent="msrp-gw-try"), self._page_request)
        await self.page.start([ListenSpec("UDP", self.host, 0)])
        self.msrp = MsrpEndpoint(self.host, 0)
        await self.msrp.start()
        self.msrp_sip = SipEndpoint(EndpointConfig(user_agent="msrp-gw-try"), self._msrp_request)
        await self.msrp_sip.start([ListenSpec("UDP", self.host, 0)])

    async def close(self) -> None:
        for closing in (self.msrp, self.msrp_sip, self.page):
            if closing is not None:
                with contextlib.suppress(Exception):
                    await closing.close()

    def _page_request(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "MESSAGE":
            self.at_page.append(incoming.request)
            self.arrived.set()
            incoming.respond(200)
        elif incoming.request.method != "ACK":
            incoming.respond(405)

    def _msrp_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        if request.method in ("ACK", "CANCEL"):
            return
        if request.method == "BYE":
            incoming.respond(200)
            return
        if request.method != "INVITE":
            incoming.respond(405)
            return
        assert self.msrp is not None
        offer = parse_sdp(request.body)
        media = find_msrp_media(offer)
        if media is None:
            incoming.respond(488)
            return
        local = self.msrp.new_local_uri()
        box: list[MsrpHandle] = []

        def on_event(event: SessionEvent) -> None:
            if isinstance(event, MessageReceived) and box:
                self.at_msrp.append((box[0], event.body))
                self.arrived.set()

        handle = self.msrp.create_session(
            media.path,
            local_uri=local,
            role="passive",
            accept_types=["text/plain"],
            on_event=on_event,
            peer_accept_types=media.accept_types,
        )
        box.append(handle)
        answer = build_msrp_answer(
            media,
            address=self.host,
            port=self.msrp.uri.port or 0,
            path=[str(local)],
            accept_types=["text/plain"],
            setup="passive" if media.setup else None,
            offer_sdp=offer,
        )
        incoming.respond(200, body=answer.to_bytes(), content_type="application/sdp")


async def run_try(
    gateway: tuple[str, int], timeout: float = 10.0, hold: float = 0.0, host: str = "127.0.0.1"
) -> int:
    """`hold`: seconds to keep both users (and so the session) up after success; `host`: the
    address both users listen on (an IP address)."""
    users = _Users(host=host)
    await users.start()
    try:
        assert users.page is not None and users.msrp_sip is not None
        page_port = users.page.local("UDP").port
        msrp_port = users.msrp_sip.local("UDP").port
        where = f"[{host}]" if ":" in host else host
        alice, bob = f"sip:alice@{where}:{page_port}", f"sip:bob@{where}:{msrp_port}"
        print(f"page-mode user {alice}, MSRP user {bob}, gateway {gateway[0]}:{gateway[1]}")
        message = users.page.new_request(
            "MESSAGE",
            bob,
            from_=f"<{alice}>",
            to=f"<{bob}>",
            body=TO_MSRP,
            content_type="text/plain",
        )
        try:
            response = await asyncio.wait_for(
                users.page.request(message, Address("UDP", *gateway)), timeout
            )
        except TimeoutError:
            print(f"the gateway at {gateway[0]}:{gateway[1]} did not answer the MESSAGE")
            return 3
        print(f"page mode -> session mode: MESSAGE answered {response.status} {response.reason}")
        if response.status >= 300 or not users.at_msrp:
            print("the MSRP user received nothing")
            return 1
        handle, body = users.at_msrp[0]
        print(f"  the MSRP user received {body.decode(errors='replace')!r} in an MSRP SEND")
        handle.send_nowait(TO_PAGE, "text/plain")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not users.at_page and loop.time() < deadline:
            users.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(users.arrived.wait(), deadline - loop.time())
        if not users.at_page:
            print("session mode -> page mode: the page-mode user received nothing")
            return 1
        got = users.at_page[0].body.decode(errors="replace")
        print(f"session mode -> page mode: the page-mode user received {got!r} in a SIP MESSAGE")
        print("both ways: OK", flush=True)
        if hold > 0:
            print(f"holding the session for {hold:g} s (Ctrl-C to stop)", flush=True)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(hold)
        return 0
    finally:
        await users.close()


async def run_rounds(
    gateway: tuple[str, int], timeout: float, hold: float, host: str, every: float
) -> int:
    """`run_try` once, or every `every` seconds until SIGINT or SIGTERM (then exit 0): the
    signal cancels the round in flight, whatever it waits for."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            round_ = asyncio.ensure_future(run_try(gateway, timeout, hold, host=host))
            await asyncio.wait({round_, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                while not round_.done():  # a cancellation can be swallowed once: insist
                    round_.cancel()
                    await asyncio.wait({round_}, timeout=0.1)
                return 0
            code = round_.result()
            if every <= 0:
                return code
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(stopping), every)
            if stop.is_set():
                return 0
    finally:
        stopping.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
