"""The page-mode user and an events subscriber, shared by the gateway tests.

`PageUser` is a gw.sip UA that sends MESSAGEs to a node and records (and answers) those the
node sends it; `EventWatch` subscribes to `msrpgw:events` before a test acts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redis.asyncio import Redis

from gw.sip.endpoint import EndpointConfig, IncomingRequest, SipEndpoint
from gw.sip.message import Request, Response
from gw.sip.transaction import Address, Timers
from gw.sip.transport import ListenSpec


class SipTarget(Protocol):
    """A node as PageUser addresses it (a GatewayProcess, or an in-process node)."""

    def sip(self, transport: str) -> tuple[str, int]: ...


@dataclass
class PageUser:
    status: int = 200
    delay: float = 0.0  # seconds before answering each MESSAGE
    sip: SipEndpoint | None = None
    messages: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.sip = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)), self._handle)
        await self.sip.start([ListenSpec("UDP", "127.0.0.1", 0), ListenSpec("TCP", "127.0.0.1", 0)])

    async def close(self) -> None:
        if self.sip is not None:
            await self.sip.close()

    @property
    def port(self) -> int:
        assert self.sip is not None
        return self.sip.local("UDP").port

    def aor(self, user: str = "alice") -> str:
        """user@host:port, as MsrpUser.call's `to` wants it."""
        return f"{user}@127.0.0.1:{self.port}"

    async def _handle(self, incoming: IncomingRequest) -> None:
        if incoming.request.method == "ACK":
            return
        if incoming.request.method != "MESSAGE":
            incoming.respond(405)
            return
        self.messages.append(incoming.request)
        self.arrived.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        incoming.respond(self.status)

    async def message(
        self,
        node: SipTarget,
        ruri: str,
        body: bytes,
        *,
        content_type: str | None = "text/plain",
        from_user: str = "alice",
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        assert self.sip is not None
        req = self.sip.new_request(
            "MESSAGE",
            ruri,
            from_=f"<sip:{from_user}@127.0.0.1:{self.port}>",
            to=f"<{ruri}>",
            body=body,
            content_type=content_type,
            headers=headers,
        )
        return await self.sip.request(req, Address("UDP", *node.sip("udp")))

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Request]:
        async def _wait() -> None:
            while len(self.messages) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(_wait(), timeout)
        return self.messages


class EventWatch:
    """Subscribed to `msrpgw:events` before the test acts."""

    def __init__(self, url: str) -> None:
        self.redis = Redis.from_url(url)
        self.pubsub = self.redis.pubsub()

    async def start(self) -> None:
        await self.pubsub.subscribe("msrpgw:events")

    async def next(self, name: str, timeout: float = 5.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                data: dict[str, Any] = json.loads(msg["data"])
                if data["event"] == name:
                    return data
        raise AssertionError(f"no {name} event")

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.redis.aclose()
