"""Two msrp-gw deployments back to back (each its own Redis, so its own deployment id):
page UA -> A msg_to_msrp -> MSRP -> B msrp_gw_answer -> page UA, and the reverse. A loop
is a request that came back to the same deployment; another deployment is a peer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from gw.sip.message import Response
from gw.sip.transaction import Address
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess, start_test_node, stop_nodes
from tests.support.page_user import PageUser
from tests.support.ports import free_port
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop


@pytest.fixture
def second_redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One CA; a certificate for 127.0.0.1 that both deployments serve msrps with."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    where = tmp_path_factory.mktemp("gw-tls")
    files = {"ca": where / "ca.pem", "cert": where / "gw.pem", "key": where / "gw.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    return {name: str(path) for name, path in files.items()}


def tls_env(certs: dict[str, str]) -> dict[str, str]:
    return {
        "MSRPGW_MSRP__LISTEN": "msrps://127.0.0.1:0;tcp",
        "MSRPGW_TLS__CERT_FILE": certs["cert"],
        "MSRPGW_TLS__KEY_FILE": certs["key"],
        "MSRPGW_TLS__CA_FILE": certs["ca"],
    }


def node(
    store: RedisServer,
    name: str,
    route_to: int | None = None,
    sip_port: int = 0,
    extra: dict[str, str] | None = None,
) -> GatewayProcess:
    env = dict(extra or {})
    if sip_port:
        env["MSRPGW_SIP__LISTEN"] = f"udp:127.0.0.1:{sip_port}"
    return start_test_node(store.url, name, route_to, **env)


async def message(
    page: PageUser, gw: GatewayProcess, ruri: str, body: bytes, *, max_forwards: int
) -> Response:
    assert page.sip is not None
    req = page.sip.new_request(
        "MESSAGE",
        ruri,
        from_=f"<sip:alice@127.0.0.1:{page.port}>",
        to=f"<{ruri}>",
        body=body,
        content_type="text/plain",
        max_forwards=max_forwards,
    )
    return await page.sip.request(req, Address("UDP", *gw.sip("udp")))


async def stop(*nodes: GatewayProcess) -> None:
    await stop_nodes(*nodes)


@pytest.mark.parametrize("msrp", ["tcp", "tls"])
@pytest.mark.parametrize("first", ["A", "B"])
async def test_two_deployments_exchange_text_exact_and_in_order(
    redis_server: RedisServer,
    second_redis: RedisServer,
    page: PageUser,
    page_b: PageUser,
    certs: dict[str, str],
    first: str,
    msrp: str,
) -> None:
    """`first` is the deployment whose page user starts (its msg_to_msrp sets the session
    up; the other one answers). Then the other page user replies on the same session.
    MSRP between them over TCP, or TLS (msrps, TCP/TLS/MSRP in SDP)."""
    port_a, port_b = free_port(), free_port()
    extra = tls_env(certs) if msrp == "tls" else {}
    a = node(redis_server, "gw-a", route_to=port_b, sip_port=port_a, extra=extra)
    b = node(second_redis, "gw-b", route_to=port_a, sip_port=port_b, extra=extra)
    try:
        assert a.ready["deployment"] != b.ready["deployment"], "one identity per store"
        starter, answerer = (page, page_b) if first == "A" else (page_b, page)
        start_gw, answer_gw = (a, b) if first == "A" else (b, a)
        texts = [f"{first} says {i}".encode() for i in range(5)]
        for text in texts:
            reply = await starter.message(start_gw, f"sip:{answerer.aor('bob')}", text)
            assert reply.status == 200, start_gw.output() + answer_gw.output()
        got = await answerer.wait_for(len(texts))
        assert [m.body for m in got] == texts, start_gw.output() + answer_gw.output()
        sent_by = got[0]
        marks = f"{start_gw.ready['deployment']}, {answer_gw.ready['deployment']}"
        assert sent_by.get("X-Msrp-Gw") == marks, "the INVITE's marks, then the answerer's"
        assert sent_by.get("Max-Forwards") == "68", "70 - 1 (A's INVITE) - 1 (B's MESSAGE)"
        assert "Loop Detected" not in start_gw.output() + answer_gw.output()
        # The reply goes back on the same session: answerer's gateway -> MSRP -> starter's.
        replies = [f"re {i}".encode() for i in range(5)]
        for text in replies:
            reply = await answerer.message(
                answer_gw, f"sip:{starter.aor('alice')}", text, from_user="bob"
            )
            assert reply.status == 200, start_gw.output() + answer_gw.output()
        back = await starter.wait_for(len(replies))
        assert [m.body for m in back] == replies
        assert start_gw.output().count("session started") == 1, "one session, both ways"
        scheme = "msrps" if msrp == "tls" else "msrp"
        assert a.ready["msrp"].startswith(f"{scheme}://") and b.ready["msrp"].startswith(scheme)
    finally:
        await stop(a, b)


async def test_a_nodes_mark_is_its_whole_deployments(
    redis_server: RedisServer, page: PageUser, msrp_user: MsrpUser
) -> None:
    """Two nodes on one store share one deployment id: a request marked by one comes back
    to the other as a loop (482); the id can also be set in config."""
    one = node(redis_server, "gw-1")
    two = node(redis_server, "gw-2")
    pinned = GatewayProcess(
        env={"MSRPGW_STORE__URL": redis_server.url, "MSRPGW_NODE__DEPLOYMENT": "blue"}
    )
    pinned.start()
    try:
        assert one.ready["deployment"] == two.ready["deployment"]
        assert pinned.ready["deployment"] == "blue"
        marked = [("X-Msrp-Gw", one.ready["deployment"])]
        reply = await page.message(two, msrp_user.uri("bob"), b"loop?", headers=marked)
        assert (reply.status, reply.reason) == (482, "Loop Detected")
        reply = await page.message(pinned, msrp_user.uri("bob"), b"loop?", headers=marked)
        assert reply.status != 482, "another deployment's mark is ordinary traffic"
    finally:
        await stop(one, two, pinned)


async def test_max_forwards_is_honoured(
    redis_server: RedisServer, page: PageUser, msrp_user: MsrpUser
) -> None:
    gw = node(redis_server, "gw-mf", route_to=msrp_user.sip_port)
    try:
        reply = await message(page, gw, msrp_user.uri("bob"), b"no hops", max_forwards=0)
        assert (reply.status, reply.reason) == (483, "Too Many Hops")
        assert msrp_user.invites == []
        reply = await message(page, gw, msrp_user.uri("bob"), b"few hops", max_forwards=5)
        assert reply.status == 200, gw.output()
        invite = msrp_user.invites[0].request
        assert invite.get("Max-Forwards") == "4", "one hop less than the MESSAGE had"
        assert invite.get("X-Msrp-Gw") == gw.ready["deployment"]
        # The session's MESSAGEs towards the page user carry the same hop budget.
        handle = msrp_user.sessions[0]
        await handle.send(b"back", "text/plain")
        (got,) = await page.wait_for(1)
        assert got.get("Max-Forwards") == "4"
    finally:
        await stop(gw)
