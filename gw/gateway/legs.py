"""The MSRP leg of a gateway session: its SDP (offer or answer) and its MSRP session.

One place builds them, so the first answer and a re-INVITE's answer, and the legs of
sessions we set up and sessions we answer, cannot drift apart (the re-INVITE answer
used to drop `a=accept-wrapped-types`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from gw.msrp.endpoint import MsrpEndpoint
from gw.msrp.endpoint import Session as MsrpHandle
from gw.msrp.events import SessionEvent
from gw.msrp.uri import MsrpUri, parse_msrp_uri
from gw.sip.sdp import MsrpMedia, SessionDescription, build_msrp_answer, build_msrp_offer

if TYPE_CHECKING:
    from gw.gateway.session import GwSession
    from gw.gateway.settings import GatewaySettings

__all__ = ["Legs", "MsrpLegs", "Role", "peer_path"]

Role = Literal["active", "passive"]


def peer_path(media: MsrpMedia) -> tuple[MsrpUri, ...]:
    """The peer's a=path, parsed: MsrpUriError names the first bad URI. Checked before
    any effect (a record, an answer), so a garbage path is refused, never half set up."""
    return tuple(parse_msrp_uri(u) for u in media.path)


class Legs(Protocol):
    """What the gateway core needs to make MSRP legs (MsrpLegs; a fake in unit tests)."""

    def new_local_uri(self) -> MsrpUri: ...

    def offer(self, local_uri: MsrpUri, types: Sequence[str], setup: str | None) -> bytes: ...

    def open(
        self,
        session: GwSession,
        media: MsrpMedia,
        *,
        path: Sequence[MsrpUri],
        local_uri: MsrpUri,
        role: Role,
        types: Sequence[str],
    ) -> MsrpHandle: ...

    def answer(
        self,
        media: MsrpMedia,
        handle: MsrpHandle,
        *,
        types: Sequence[str],
        setup: str | None,
        offer: SessionDescription | None,
    ) -> bytes: ...


class MsrpLegs:
    """Builds MSRP legs for one node: its endpoint (and relay, when one is required)
    and the gateway's settings (types, chunking and size limits, timeouts)."""

    def __init__(self, msrp: MsrpEndpoint, settings: GatewaySettings) -> None:
        self.msrp = msrp
        self.settings = settings
        # Where every leg's events go (the adapter's handler): set on each session we open,
        # one bound method for all (no closure per session).
        self.sink: Callable[[GwSession, SessionEvent], None] | None = None

    def new_local_uri(self) -> MsrpUri:
        """A fresh MSRP URI of ours for a new leg (a new session id)."""
        return self.msrp.new_local_uri()

    def offer(self, local_uri: MsrpUri, types: Sequence[str], setup: str | None) -> bytes:
        """Our offer for `local_uri` (through the relay when required: its Use-Path, then
        us; msrps anywhere on the path makes it TCP/TLS/MSRP). MsrpSessionError(503)
        while a required relay is down."""
        path = self.msrp.local_path(local_uri, via_relay=self.msrp.relay_required)
        sdp = build_msrp_offer(
            address=self.msrp.advertised_host,
            port=self.msrp.uri.port or 2855,
            path=[str(u) for u in path],
            accept_types=types,
            accept_wrapped_types=self.settings.accept_wrapped_types,
            setup=setup,
            tls=any(u.secure for u in path),
        )
        return sdp.to_bytes()

    def open(
        self,
        session: GwSession,
        media: MsrpMedia,
        *,
        path: Sequence[MsrpUri],
        local_uri: MsrpUri,
        role: Role,
        types: Sequence[str],
    ) -> MsrpHandle:
        """The MSRP session for `media` (the peer's stream, its `path` parsed by
        `peer_path`), reporting to `session`.
        Whatever the MSRP user sends becomes MESSAGEs, so incoming messages have the
        page-mode size limit. MsrpSessionError(503) while a required relay is down."""
        s = self.settings
        if self.sink is not None:
            session.sink = self.sink
        return self.msrp.create_session(
            path,
            local_uri=local_uri,
            role=role,
            via_relay=self.msrp.relay_required,
            accept_types=types,
            on_event=session.on_msrp_event,
            peer_accept_types=media.accept_types or None,
            peer_max_size=media.max_size,
            chunk_size=s.chunk_size,
            max_message_size=s.max_page_message_size,
            transaction_timeout=s.msrp_transaction_timeout,
            report_bound=True,  # the gateway counts legs not bound yet (answering.Unbound)
        )

    def answer(
        self,
        media: MsrpMedia,
        handle: MsrpHandle,
        *,
        types: Sequence[str],
        setup: str | None,
        offer: SessionDescription | None,
    ) -> bytes:
        """Our answer to `media` for the leg `handle` (its a=path: Use-Path, then us)."""
        sdp = build_msrp_answer(
            media,
            address=self.msrp.advertised_host,
            port=self.msrp.uri.port or 2855,
            path=[str(u) for u in handle.local_path],
            accept_types=types,
            accept_wrapped_types=self.settings.accept_wrapped_types,
            setup=setup,
            offer_sdp=offer,
        )
        return sdp.to_bytes()
