"""RelayLink (tests/support/relay_link.py) over a real socket, against a tiny in-process relay."""

from __future__ import annotations

import asyncio

import pytest

from gw.msrp.frame import Frame, FrameParser, FrameReceived, serialize
from gw.msrp.relay import Authenticated, AuthFailed, RelayAuthError, RelayClient, RelayState
from gw.msrp.uri import MsrpUri
from tests.msrp.test_relay import ME, challenge, digest_params, expected_response, granted, reply
from tests.support.relay_link import RelayLink, connect_relay


class FakeRelay:
    """Challenges once, then grants Use-Path; echoes anything else back as a SEND to us."""

    def __init__(self, password: str = "s3cret", expires: int = 600, garbled: bool = False) -> None:
        self.password = password
        self.expires = expires
        self.garbled = garbled  # answer AUTH with an unparseable response
        self.auths: list[Frame] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeRelay:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()

    @property
    def uri(self) -> MsrpUri:
        assert self.server is not None
        return MsrpUri(host="127.0.0.1", port=self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        parser = FrameParser()
        while data := await reader.read(65536):
            for ev in parser.feed(data):
                assert isinstance(ev, FrameReceived)
                if self.garbled:
                    tid = ev.frame.tid
                    writer.write(
                        f"MSRP {tid} 200 OK\r\nTo-Path: {ME}\r\nFrom-Path: {self.uri}\r\n"
                        f"this is no header\r\n-------{tid}$\r\n".encode()
                    )
                    continue
                writer.write(serialize(self._answer(ev.frame)))

    def _answer(self, f: Frame) -> Frame:
        if f.method != "AUTH":
            return f  # echo
        self.auths.append(f)
        if f.header("Authorization") is None:
            return reply(f, 401, challenge("fake"))
        p = digest_params(f)
        if p["response"] != expected_response(p, self.password):
            return reply(f, 403)
        return granted(f, self.expires, f"msrp://{self.uri.host}:{self.uri.port}/s1;tcp")


async def test_link_authenticates_refreshes_and_passes_other_frames() -> None:
    async with FakeRelay(expires=1) as relay:
        other: list[Frame] = []
        c = RelayClient(relay.uri, ME, "alice", "s3cret", 1, refresh_ratio=0.3)
        link = await connect_relay(c, on_frame=other.append, timeout=5)
        try:
            assert [str(u) for u in link.path()][-1] == str(ME)
            ev = await asyncio.wait_for(link.next_event(), 5)
            assert isinstance(ev, Authenticated) and ev.refresh
            assert len(relay.auths) == 3  # challenge, answer, one-trip refresh
            send = Frame.request("SEND", [ME], [relay.uri], body=b"hi", content_type="text/plain")
            link.send(send)
            await link.drain()
            for _ in range(100):
                if other:
                    break
                await asyncio.sleep(0.01)
            assert [f.body for f in other] == [b"hi"]
        finally:
            await link.close()
        assert link.closed


async def test_link_wrong_password() -> None:
    async with FakeRelay() as relay:
        c = RelayClient(relay.uri, ME, "alice", "nope")
        with pytest.raises(RelayAuthError) as info:
            await connect_relay(c, timeout=5)
        assert info.value.event.status == 403


async def test_link_reports_connection_loss() -> None:
    async with FakeRelay() as relay:
        events: list[object] = []
        c = RelayClient(relay.uri, ME, "alice", "s3cret", 600)
        link = await connect_relay(c, on_event=events.append, timeout=5)
        lost = link.next_event()
        for w in relay.writers:
            w.close()
        ev = await asyncio.wait_for(lost, 5)
        assert isinstance(ev, AuthFailed) and ev.was_authenticated
        assert link.closed and c.state is RelayState.FAILED
        await link.close()


async def test_link_auth_timeout() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # never answers
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        c = RelayClient(MsrpUri(host="127.0.0.1", port=port), ME, "a", "b", response_timeout=0.2)
        link = RelayLink(c, reader, writer)
        with pytest.raises(RelayAuthError) as info:
            await link.authenticate(timeout=5)
        assert info.value.event.status == 408
        await link.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_link_fails_fast_on_unreadable_answer() -> None:
    """Kamailio 5.6's msrp_cmap_save sends such answers (423 with junk headers)."""
    async with FakeRelay(garbled=True) as relay:
        c = RelayClient(relay.uri, ME, "alice", "s3cret", response_timeout=30.0)
        with pytest.raises(RelayAuthError) as info:
            await connect_relay(c, timeout=2)
        assert "unreadable" in info.value.event.reason
