"""Gateway options end to end: a real `msrp-gw run`, a real Redis, a gw.sip page-mode user
and a gw.msrp session-mode user. require_success_report, the queue bound, the setup
timeout, failure_notice, re-INVITE with a new path, and content types the peer refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest
from redis.asyncio import Redis

from gw.msrp.events import MessageDelivered
from tests.gateway.test_e2e import start_gateway
from tests.support.msrp_user import MsrpUser
from tests.support.node import GatewayProcess
from tests.support.page_user import EventWatch, PageUser
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.interop

KEY = "alice@127.0.0.1-bob@127.0.0.1"
T = TypeVar("T")


@pytest.fixture
async def gateway(
    redis_server: RedisServer, msrp_user: MsrpUser, page: PageUser
) -> AsyncIterator[Callable[..., GatewayProcess]]:
    """Start a node (stopped, and checked to exit 0, before the users close)."""
    nodes: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        node = start_gateway(redis_server, msrp_user, **env)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        code = await asyncio.to_thread(node.stop)
        assert code == 0, node.output()


async def timed(awaitable: Awaitable[T]) -> tuple[float, T]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await awaitable
    return loop.time() - started, result


# -- require_success_report ---------------------------------------------------------------------
async def test_require_success_report_answers_200_after_the_report(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    msrp_user.report_delay = 0.8
    node = gateway(MSRPGW_GATEWAY__REQUIRE_SUCCESS_REPORT="true")
    first = await page.message(node, msrp_user.uri("bob"), b"first")
    assert first.status == 200, node.output()
    assert msrp_user.reports_sent == 1
    # The session is up: the SEND arrives at once, the 200 waits for the REPORT.
    pending = asyncio.create_task(page.message(node, msrp_user.uri("bob"), b"second"))
    received = await msrp_user.wait_for(2, timeout=3)
    assert received[1].body == b"second"
    await asyncio.sleep(0.4)
    assert not pending.done(), "200 before the success REPORT"
    assert msrp_user.reports_sent == 1
    second = await pending
    assert second.status == 200, node.output()
    assert msrp_user.reports_sent == 2


async def test_require_success_report_without_report_is_408_within_delivery_timeout(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    msrp_user.success_reports = False
    node = gateway(
        MSRPGW_GATEWAY__REQUIRE_SUCCESS_REPORT="true", MSRPGW_GATEWAY__DELIVERY_TIMEOUT="1.5"
    )
    elapsed, response = await timed(page.message(node, msrp_user.uri("bob"), b"unconfirmed"))
    assert response.status == 408, node.output()
    assert 1.4 <= elapsed < 3.0
    assert [r.body for r in msrp_user.received] == [b"unconfirmed"]
    assert msrp_user.reports_sent == 0


# -- the queue bound ------------------------------------------------------------------------------
async def test_queue_full_is_503_with_retry_after_and_the_queued_one_still_gets_200(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    msrp_user.answer_delay = 1.0
    node = gateway(MSRPGW_GATEWAY__MAX_QUEUED_MESSAGES="1", MSRPGW_GATEWAY__RETRY_AFTER="7")
    first = asyncio.create_task(page.message(node, msrp_user.uri("bob"), b"queued"))
    await asyncio.sleep(0.3)  # the INVITE is out, "queued" waits in the session's queue
    assert not first.done()
    elapsed, second = await timed(page.message(node, msrp_user.uri("bob"), b"one too many"))
    assert second.status == 503, node.output()
    assert second.get("Retry-After") == "7"
    assert elapsed < 0.5, "refused at once, not after the setup"
    assert (await first).status == 200, node.output()
    assert [r.body for r in msrp_user.received] == [b"queued"]
    third = await page.message(node, msrp_user.uri("bob"), b"after the queue drained")
    assert third.status == 200
    assert len(msrp_user.invites) == 1


# -- setup timeout --------------------------------------------------------------------------------
async def test_setup_timeout_cancels_the_invite_and_answers_408(
    gateway: Callable[..., GatewayProcess],
    msrp_user: MsrpUser,
    page: PageUser,
    events: EventWatch,
) -> None:
    msrp_user.never_answer = True
    node = gateway(MSRPGW_GATEWAY__SETUP_TIMEOUT="1", MSRPGW_GATEWAY__DELIVERY_TIMEOUT="5")
    elapsed, response = await timed(page.message(node, msrp_user.uri("bob"), b"nobody home"))
    assert response.status == 408, node.output()
    assert 0.9 <= elapsed < 3.0, elapsed
    assert msrp_user.cancels == 1
    assert len(msrp_user.invites) == 1
    event = await events.next("E_MSRP_GW_SETUP_FAILED")
    data = event["data"]
    assert data["key"] == KEY
    assert data["code"] is None and data["reason"] is None, "no reply: null, not our 408"
    assert data["to_uri"] == f"sip:alice@127.0.0.1:{page.port}"
    assert data["ruri"] == f"sip:alice@127.0.0.1:{page.port}"
    assert data["from_uri"] == msrp_user.uri("bob")
    redis = Redis.from_url(node.env["MSRPGW_STORE__URL"])
    try:
        assert [k async for k in redis.scan_iter(match="msrpgw:sess:*")] == []
    finally:
        await redis.aclose()


# -- failure_notice -------------------------------------------------------------------------------
async def test_failure_notice_goes_back_to_the_page_mode_sender(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    msrp_user.invite_status = 486
    node = gateway(MSRPGW_GATEWAY__FAILURE_NOTICE="could not deliver: {code} {reason}")
    response = await page.message(node, msrp_user.uri("bob"), b"are you there?")
    assert response.status == 486, node.output()
    notices = await page.wait_for(1, timeout=5)
    notice = notices[0]
    assert notice.body == b"could not deliver: 486 Busy Here"
    assert notice.content_type == "text/plain"
    assert str(notice.uri) == f"sip:alice@127.0.0.1:{page.port}"
    assert notice.to.uri.user == "alice"
    assert notice.from_.uri.user == "bob"
    await asyncio.sleep(0.3)
    assert len(page.messages) == 1, "one notice, and it is not fed back into msg_to_msrp"
    assert len(msrp_user.invites) == 1


# -- re-INVITE with a new path --------------------------------------------------------------------
async def test_reinvite_with_new_path_moves_the_session(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    node = gateway()
    status, old = await msrp_user.call(node.sip("udp"), to=page.aor())
    assert status == 200 and old is not None, node.output()
    assert isinstance(await old.send(b"before", "text/plain"), MessageDelivered)
    assert (await page.wait_for(1))[0].body == b"before"

    response, new = await msrp_user.reoffer(msrp_user.dialogs[0])
    assert response.status == 200, node.output()
    assert new is not None
    assert new.local_uri != old.local_uri
    old.close("moved")

    outcome = await new.send(b"after", "text/plain")
    assert isinstance(outcome, MessageDelivered), (outcome, node.output())
    assert (await page.wait_for(2))[1].body == b"after"

    reply = await page.message(node, msrp_user.uri("bob"), b"reply on the new path")
    assert reply.status == 200, node.output()
    received = await msrp_user.wait_for(1)
    assert received[0].body == b"reply on the new path"
    assert received[0].session_id == new.local_uri.session_id, node.output()
    assert msrp_user.byes == 0
    assert msrp_user.invites == [], "the reply used the answered session"


async def test_reinvite_answer_keeps_accept_wrapped_types(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    """The first answer and a re-INVITE's answer are built in one place: both carry
    a=accept-wrapped-types (the re-INVITE answer used to drop it)."""
    node = gateway(MSRPGW_GATEWAY__ACCEPT_WRAPPED_TYPES="text/plain message/imdn+xml")
    offered = await msrp_user.offer(node.sip("udp"), to=page.aor())
    assert offered.status == 200 and offered.dialog is not None, node.output()
    wrapped = "a=accept-wrapped-types:text/plain message/imdn+xml"
    assert wrapped in offered.response.body.decode()
    response, new = await msrp_user.reoffer(offered.dialog)
    assert response.status == 200 and new is not None, node.output()
    assert wrapped in response.body.decode()


# -- content type the MSRP peer does not accept ---------------------------------------------------
async def test_type_not_accepted_by_msrp_peer_is_415_with_accept(
    gateway: Callable[..., GatewayProcess], msrp_user: MsrpUser, page: PageUser
) -> None:
    msrp_user.accept_types = ["text/html"]
    node = gateway(MSRPGW_GATEWAY__CONTENT_TYPES="text/plain text/html")
    for body in (b"plain one (session setup)", b"plain two (session up)"):
        response = await page.message(node, msrp_user.uri("bob"), body)
        assert response.status == 415, (response, node.output())
        assert response.get("Accept") == "text/html", response
    html = await page.message(node, msrp_user.uri("bob"), b"<p>html</p>", content_type="text/html")
    assert html.status == 200, node.output()
    received = await msrp_user.wait_for(1)
    assert [(r.content_type, r.body) for r in received] == [("text/html", b"<p>html</p>")]
    assert len(msrp_user.invites) == 1
