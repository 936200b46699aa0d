"""Gateway session flows end to end: expiry, reply modes, BYE, replies into answered sessions."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from tests.gateway.test_e2e import start_gateway, stop
from tests.support.msrp_user import MsrpUser
from tests.support.redis_server import RedisServer
from tests.support.sipp import Sipp

pytestmark = pytest.mark.interop


async def session_keys(url: str) -> list[bytes]:
    redis = Redis.from_url(url)
    try:
        return [k async for k in redis.scan_iter(match="msrpgw:sess:*")]
    finally:
        await redis.aclose()


async def collect_events(url: str, into: list[dict[str, object]], ready: asyncio.Event) -> None:
    redis = Redis.from_url(url)
    pubsub = redis.pubsub()
    await pubsub.subscribe("msrpgw:events")
    ready.set()
    try:
        while True:
            msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if msg is not None:
                into.append(json.loads(msg["data"]))
    finally:
        await pubsub.aclose()
        await redis.aclose()


async def test_session_timeout_ends_session_with_bye_and_event(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(
        redis_server,
        msrp_user,
        MSRPGW_GATEWAY__SESSION_TIMEOUT="2",
        MSRPGW_GATEWAY__MESSAGE_TIMEOUT="2",
        MSRPGW_GATEWAY__CLEANUP_INTERVAL="1",
    )
    events: list[dict[str, object]] = []
    ready = asyncio.Event()
    collector = asyncio.create_task(collect_events(redis_server.url, events, ready))
    await ready.wait()
    try:
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "200"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        assert len(await session_keys(redis_server.url)) == 1
        for _ in range(60):
            if msrp_user.byes:
                break
            await asyncio.sleep(0.1)
        assert msrp_user.byes == 1, node.output()
        await asyncio.sleep(0.3)
        assert await session_keys(redis_server.url) == []
        ended = [e for e in events if e["event"] == "E_MSRP_GW_SESSION_ENDED"]
        assert ended and ended[0]["data"]["reason"] == "expired"  # type: ignore[index]
    finally:
        collector.cancel()
        await stop(node)


async def test_accept_mode_answers_202_and_delivers(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(redis_server, msrp_user, MSRPGW_GATEWAY__REPLY_MODE="accept")
    try:
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "202"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        received = await msrp_user.wait_for(1)
        assert received[0].body == b"hello from sipp 1\r\n"
    finally:
        await stop(node)


async def test_page_reply_goes_into_answered_session(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    """How a page-mode user replies: its MESSAGE's key matches the answered session."""
    node = start_gateway(redis_server, msrp_user)
    uas = Sipp("message_uas.xml")
    await uas.start()
    try:
        status, handle = await msrp_user.call(node.sip("udp"), to=f"alice@127.0.0.1:{uas.port}")
        assert status == 200 and handle is not None
        outcome = await handle.send(b"hi alice", "text/plain")
        assert type(outcome).__name__ == "MessageDelivered"
        assert (await uas.wait()).returncode == 0
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "200"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        received = await msrp_user.wait_for(1)
        assert received[0].body == b"hello from sipp 1\r\n"
        assert msrp_user.invites == [], "the reply must reuse the answered session"
    finally:
        await stop(node)


async def test_bye_from_msrp_side_ends_session_and_next_message_starts_new_one(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(redis_server, msrp_user)
    try:
        status, handle = await msrp_user.call(node.sip("udp"), to="alice@127.0.0.1:9")
        assert status == 200 and handle is not None
        assert len(await session_keys(redis_server.url)) == 1
        assert msrp_user.sip is not None
        bye = await msrp_user.sip.bye(msrp_user.dialogs[0])
        assert bye.status == 200
        await asyncio.sleep(0.3)
        assert await session_keys(redis_server.url) == []
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "200"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
        assert len(msrp_user.invites) == 1, "a new MSRP session is set up"
        assert (await msrp_user.wait_for(1))[0].body == b"hello from sipp 1\r\n"
    finally:
        await stop(node)


async def test_trace_switch_logs_every_frame_of_the_session(
    redis_server: RedisServer, msrp_user: MsrpUser
) -> None:
    node = start_gateway(
        redis_server, msrp_user, MSRPGW_GATEWAY__TRACE_KEYS="alice@127.0.0.1-bob@127.0.0.1"
    )
    try:
        sipp = Sipp("message_uac.xml", remote=node.sip("udp"), replace={"EXPECT": "200"})
        result = await sipp.run()
        assert result.returncode == 0, result.errors + node.output()
    finally:
        await stop(node)
    traces = [
        json.loads(line)["msg"]
        for line in node.output().splitlines()
        if line.startswith("{") and json.loads(line)["logger"] == "gw.trace"
    ]
    first_lines = [t.split("\n", 2)[1] for t in traces if "\n" in t]
    assert any(t.startswith("sip in") for t in traces)
    assert any(line.startswith("MESSAGE sip:bob@") for line in first_lines)
    assert any(line.startswith("INVITE sip:bob@") for line in first_lines)
    assert any(line.startswith("SIP/2.0 200") for line in first_lines)
    assert any(t.startswith("msrp out") and " SEND" in t for t in traces)
    assert any(line.startswith("BYE ") for line in first_lines)
