"""msrp-gw against a peer that behaves as OpenSIPS 3.6's msrp_gateway does on the wire
(tests/support/opensips_like.py): a real `msrp-gw run` node, a real Redis, a page-mode
user on gw.sip. Both directions; the text must arrive exact and in order."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import AsyncIterator

import pytest

from tests.support.node import GatewayProcess, start_test_node, stop_nodes
from tests.support.opensips_like import OpenSipsLikePeer
from tests.support.page_user import PageUser
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop


@pytest.fixture
async def opensips() -> AsyncIterator[OpenSipsLikePeer]:
    peer = OpenSipsLikePeer()
    await peer.start()
    yield peer
    await peer.close()


def start_node(redis_server: RedisServer, peer: OpenSipsLikePeer) -> GatewayProcess:
    return start_test_node(redis_server.url, "gw-b", peer.sip_port)


def metric(node: GatewayProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://{node.ready['mgmt']}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
    assert found is not None, name
    return float(found.group(1))


async def stop(node: GatewayProcess) -> None:
    await stop_nodes(node)


async def test_offerer_on_two_connections_reaches_the_page_user(
    redis_server: RedisServer, opensips: OpenSipsLikePeer, page: PageUser
) -> None:
    """OpenSIPS msg_to_msrp -> msrp-gw msrp_gw_answer: the bind SEND on one connection,
    the text on a second one, Failure-Report: no on both. Nothing may be lost."""
    node = start_node(redis_server, opensips)
    try:
        response = await opensips.invite(node.sip("udp"), to=page.aor(), from_user="bob")
        assert response.status == 200, node.output()
        first = await opensips.open_connection()
        second = await opensips.open_connection()
        await opensips.bind(first)
        texts = [f"hello {i} from opensips".encode() for i in range(3)]
        for text in texts:
            await opensips.send_text(second, text)
        messages = await page.wait_for(3)
        assert [m.body for m in messages] == texts, node.output()
        assert all(m.get("Content-Type") == "text/plain" for m in messages)
        assert opensips.received == [], "Failure-Report: no is never answered"
        assert "refused 506" not in node.output()
        assert metric(node, "msrpgw_msrp_alternate_connections_total") == 1.0
        assert node.output().count("request on a second connection") == 1, "logged once"
        # The page user answers on the same session: out on the bound (first) connection.
        reply = await page.message(node, f"sip:bob@127.0.0.1:{opensips.sip_port}", b"re: hi")
        assert reply.status == 200, node.output()
        (back,) = await opensips.wait_sends(1)
        assert (back.body, back.connection) == (b"re: hi", first)
        # The first connection goes away (idle at OpenSIPS): the session lives on the second.
        await opensips.close_connection(first)
        await asyncio.sleep(0.3)
        await opensips.send_text(second, b"still here")
        messages = await page.wait_for(4)
        assert messages[3].body == b"still here"
        assert metric(node, "msrpgw_msrp_sessions_moved_total") == 1.0
        reply = await page.message(node, f"sip:bob@127.0.0.1:{opensips.sip_port}", b"and you?")
        assert reply.status == 200, node.output()
        sends = await opensips.wait_sends(2)
        assert (sends[1].body, sends[1].connection) == (b"and you?", second)
    finally:
        await stop(node)


async def test_foreign_from_path_on_a_second_connection_is_refused(
    redis_server: RedisServer, opensips: OpenSipsLikePeer, page: PageUser
) -> None:
    """Only the session's own peer path may use another connection: 481, nothing delivered."""
    node = start_node(redis_server, opensips)
    try:
        response = await opensips.invite(node.sip("udp"), to=page.aor(), from_user="bob")
        assert response.status == 200, node.output()
        first = await opensips.open_connection()
        await opensips.bind(first)
        real_uri = opensips.local_uri
        opensips.local_uri = real_uri.replace(real_uri.rsplit("/", 1)[1], "forged;tcp")
        second = await opensips.open_connection()
        await opensips.send_text(second, b"injected")
        opensips.local_uri = real_uri
        await opensips.send_text(first, b"genuine")
        (message,) = await page.wait_for(1)
        assert message.body == b"genuine"
        await asyncio.sleep(0.3)
        assert len(page.messages) == 1, "the forged SEND was not delivered"
        assert "refused 481 From-Path does not match" in node.output()
    finally:
        await stop(node)


async def test_answerer_replies_on_a_new_connection(
    redis_server: RedisServer, opensips: OpenSipsLikePeer, page: PageUser
) -> None:
    """msrp-gw msg_to_msrp -> OpenSIPS msrp_gw_answer: we connect and SEND; its own SENDs
    come on a new connection to our a=path URI, not on ours."""
    node = start_node(redis_server, opensips)
    try:
        ruri = f"sip:bob@127.0.0.1:{opensips.sip_port}"
        for text in (b"one", b"two"):
            reply = await page.message(node, ruri, text)
            assert reply.status == 200, node.output()
        sends = await opensips.wait_sends(2)
        assert [s.body for s in sends] == [b"one", b"two"]
        assert {s.connection for s in sends} == {0}, "one connection, opened by the gateway"
        back = await opensips.open_connection()
        await opensips.send_text(back, b"reply from opensips")
        (message,) = await page.wait_for(1)
        assert message.body == b"reply from opensips"
        assert message.get("Content-Type") == "text/plain"
    finally:
        await stop(node)
