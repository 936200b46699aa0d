"""Real page-mode SIP clients from Debian (baresip 1.0.0, linphone-daemon 5.1) and a
session-mode user talking through a real `msrp-gw run` process, in both directions.

baresip is driven by its ctrl_tcp interface; what it shows is read from its console (the
`cons` UI) and what it sent and got on the wire from its SIP trace
(tests/support/baresip.py). linphone-daemon is driven by its command socket; what it received
and the states of what it sent are its events, the SIP codes are in its log
(tests/support/linphone.py). The MSRP user is tests/support/msrp_user.py.
"""

from __future__ import annotations

import pytest

from gw.msrp.events import MessageDelivered, MessageFailed
from tests.support.baresip import Baresip, Shown, require_baresip
from tests.support.linphone import DELIVERED, NOT_DELIVERED, Linphone, Status, require_linphone
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess, start_test_node, stop_nodes
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop

TEXTS = [
    "hello from the page-mode side 1",
    'quotes "inside", a colon: and UTF-8 \u00e9\u00e8 \u2713 2',
    "the third message",
]


@pytest.fixture
def baresip() -> None:
    """Checked before the gateway starts: skip (fail in CI) without the binary."""
    require_baresip()


@pytest.fixture
def linphone() -> None:
    require_linphone()


def start_gateway(redis_server: RedisServer, msrp_user: MsrpUser, **env: str) -> GatewayProcess:
    return start_test_node(redis_server.url, "gw-interop", msrp_user.sip_port, **env)


async def stop(node: GatewayProcess) -> None:
    await stop_nodes(node)


def gateway_uri(node: GatewayProcess, user: str = "bob") -> str:
    host, port = node.sip("udp")
    return f"sip:{user}@{host}:{port}"


@pytest.mark.usefixtures("baresip")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_baresip_messages_reach_the_msrp_user_exactly_and_in_order(
    redis_server: RedisServer, msrp_user: MsrpUser, transport: str
) -> None:
    # baresip 1.0.0 sends at most 1,015 bytes; with msrp.chunk_size 256 that is 4 chunks
    texts = [*TEXTS, "".join(chr(ord("a") + i % 26) for i in range(1000))]
    node = start_gateway(redis_server, msrp_user, MSRPGW_MSRP__CHUNK_SIZE="256")
    host, port = node.sip(transport)
    # over TCP through the account's outbound proxy: the only way 1.0.0 sends over TCP
    outbound = f"sip:{host}:{port};transport=tcp" if transport == "tcp" else ""
    try:
        async with Baresip(
            user="alice", contact=f"sip:bob@{host}:{port}", outbound=outbound
        ) as client:
            sent = [await client.send_message(text) for text in texts]
            assert [s.request.body for s in sent] == [t.encode() for t in texts]
            assert {s.request.transport for s in sent} == {transport.upper()}
            # confirm mode: 200 only once the MSRP user has answered the SEND with 200
            assert [(s.status, s.response.reason) for s in sent] == [(200, "OK")] * len(texts)
            received = await msrp_user.wait_for(len(texts))
            assert [r.body for r in received] == [t.encode() for t in texts]
            assert [r.content_type for r in received] == ["text/plain"] * len(texts)
            assert len(msrp_user.invites) == 1, "one MSRP session for the conversation"
            invite = msrp_user.invites[0].request
            assert invite.from_.uri.user == "alice"
            assert invite.to.uri.user == "bob"
            assert client.errors() == "", client.errors()
    finally:
        await stop(node)
    assert msrp_user.byes == 1, "SIGTERM ends the session with BYE"


@pytest.mark.usefixtures("baresip")
@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_msrp_user_sends_are_shown_by_baresip_exactly_and_in_order(
    redis_server: RedisServer, msrp_user: MsrpUser, transport: str
) -> None:
    node = start_gateway(redis_server, msrp_user)
    try:
        async with Baresip(user="alice") as client:
            to = client.aor + (";transport=tcp" if transport == "tcp" else "")
            status, handle = await msrp_user.call(node.sip("udp"), to=to)
            assert status == 200
            assert handle is not None
            # all queued at once: the gateway must keep their order
            queued = [
                handle.send_nowait(t.encode(), "text/plain", success_report=True) for t in TEXTS
            ]
            outcomes = [await handle.outcome(m) for m in queued]
            # a success REPORT comes only after baresip's 2xx to the MESSAGE
            assert outcomes == [MessageDelivered(m.message_id, True) for m in queued]
            shown = await client.wait_shown(len(TEXTS))
            peer = f"sip:bob@127.0.0.1:{msrp_user.sip_port}"
            assert shown == [Shown(peer, t) for t in TEXTS]
            messages = client.received()
            assert [m.body for m in messages] == [t.encode() for t in TEXTS]
            assert {m.transport for m in messages} == {transport.upper()}
            assert [m.header("Content-Type") for m in messages] == ["text/plain"] * len(TEXTS)
            # (sets: a retransmitted MESSAGE is answered again)
            assert [{a.status for a in client.answers(m)} for m in messages] == [{200}] * len(TEXTS)
    finally:
        await stop(node)


@pytest.mark.usefixtures("baresip")
async def test_baresip_reply_goes_out_on_the_session_the_msrp_user_set_up(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(redis_server, msrp_user)
    try:
        async with Baresip(user="alice", contact=gateway_uri(node)) as client:
            status, handle = await msrp_user.call(node.sip("udp"), to=client.aor)
            assert status == 200
            assert handle is not None
            outcome = await handle.send(b"ping from MSRP", "text/plain", success_report=True)
            assert isinstance(outcome, MessageDelivered), outcome
            shown = await client.wait_shown(1)
            assert [s.text for s in shown] == ["ping from MSRP"]
            sent = await client.send_message("pong from baresip")
            assert sent.status == 200
            received = await msrp_user.wait_for(1)
            assert [r.body for r in received] == [b"pong from baresip"]
            assert received[0].session_id == handle.local_uri.session_id
            assert msrp_user.invites == [], "the reply used the existing session, no INVITE"
    finally:
        await stop(node)


@pytest.mark.usefixtures("baresip")
async def test_msrp_side_refusal_reaches_baresip_as_the_invites_status(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    msrp_user.invite_status = 486
    node = start_gateway(redis_server, msrp_user)
    try:
        async with Baresip(user="alice", contact=gateway_uri(node)) as client:
            sent = await client.send_message("is anybody there")
            assert (sent.status, sent.response.reason) == (486, "Busy Here")
            await client.wait_error("486 Busy Here")  # what baresip shows its user
            assert len(msrp_user.invites) == 1
            assert msrp_user.received == []
    finally:
        await stop(node)


@pytest.mark.usefixtures("baresip")
async def test_baresip_refusing_a_type_comes_back_to_the_msrp_user_as_a_failure_report(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    msrp_user.accept_types = ["text/plain", "text/html"]
    node = start_gateway(
        redis_server, msrp_user, MSRPGW_GATEWAY__CONTENT_TYPES="text/plain text/html"
    )
    try:
        async with Baresip(user="alice") as client:
            status, handle = await msrp_user.call(node.sip("udp"), to=client.aor)
            assert status == 200
            assert handle is not None
            refused = await handle.send(b"<b>bold</b>", "text/html", success_report=True)
            delivered = await handle.send(b"plain after all", "text/plain", success_report=True)
            assert isinstance(refused, MessageFailed), refused
            assert refused.code == 415  # SIP 415 maps to a failure REPORT 415
            assert isinstance(delivered, MessageDelivered), delivered
            messages = client.received()
            assert [(m.header("Content-Type"), m.body) for m in messages] == [
                ("text/html", b"<b>bold</b>"),
                ("text/plain", b"plain after all"),
            ]
            assert [{a.status for a in client.answers(m)} for m in messages] == [{415}, {200}]
            shown = await client.wait_shown(1)
            assert [s.text for s in shown] == ["plain after all"]
    finally:
        await stop(node)


@pytest.mark.usefixtures("linphone")
async def test_linphone_messages_reach_the_msrp_user_exactly_and_in_order(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(redis_server, msrp_user)
    host, port = node.sip("udp")
    try:
        # linphone drops the port of the destination: the gateway is its outbound proxy
        async with Linphone(user="carol", route=f"sip:{host}:{port}") as client:
            # all sent at once: they queue behind the session set-up and must keep their order
            ids = [await client.send_message(f"sip:bob@{host}:{port}", t) for t in TEXTS]
            assert [await client.wait_state(i) for i in ids] == [DELIVERED] * len(TEXTS)
            # (a set: a UDP retransmission of a request gets the response again)
            ok = {Status(200, "OK", sent=False)}
            assert [set(client.responses(i)) for i in ids] == [ok] * len(TEXTS)
            received = await msrp_user.wait_for(len(TEXTS))
            assert [r.body for r in received] == [t.encode() for t in TEXTS]
            assert [r.content_type for r in received] == ["text/plain"] * len(TEXTS)
            assert len(msrp_user.invites) == 1
            assert msrp_user.invites[0].request.from_.uri.user == "carol"
    finally:
        await stop(node)


@pytest.mark.usefixtures("linphone")
async def test_msrp_user_sends_reach_linphone_exactly_and_in_order(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(redis_server, msrp_user)
    try:
        async with Linphone(user="carol") as client:
            status, handle = await msrp_user.call(node.sip("udp"), to=client.aor)
            assert status == 200
            assert handle is not None
            queued = [
                handle.send_nowait(t.encode(), "text/plain", success_report=True) for t in TEXTS
            ]
            outcomes = [await handle.outcome(m) for m in queued]
            assert outcomes == [MessageDelivered(m.message_id, True) for m in queued]
            received = await client.wait_received(len(TEXTS))
            assert [r.text for r in received] == TEXTS
            assert {r.peer for r in received} == {"sip:bob@127.0.0.1"}
            codes = [{s.code for s in client.responses(r.call_id) if s.sent} for r in received]
            assert codes == [{200}] * len(TEXTS)  # a retransmitted MESSAGE is answered again
    finally:
        await stop(node)


@pytest.mark.usefixtures("linphone")
async def test_msrp_side_refusal_reaches_linphone_as_not_delivered(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    msrp_user.invite_status = 486
    node = start_gateway(redis_server, msrp_user)
    host, port = node.sip("udp")
    try:
        async with Linphone(user="carol", route=f"sip:{host}:{port}") as client:
            message_id = await client.send_message(f"sip:bob@{host}:{port}", "anyone there")
            assert await client.wait_state(message_id) == NOT_DELIVERED
            assert set(client.responses(message_id)) == {Status(486, "Busy Here", sent=False)}
            assert msrp_user.received == []
    finally:
        await stop(node)
