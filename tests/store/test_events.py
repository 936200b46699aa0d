"""The event bus: versioned JSON envelopes on `<prefix>:events`."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from gw.store import ENVELOPE_VERSION, EventBus


async def test_event_round_trip(redis: Redis, key_prefix: str) -> None:
    bus = EventBus(redis, node="gw1", prefix=key_prefix, clock=lambda: 1234.5)
    assert bus.channel == f"{key_prefix}:events"
    async with bus.subscribe() as events:
        data = {"key": "a|b", "from_uri": "sip:a@x", "to_uri": "sip:b@y", "ruri": "sip:b@y",
                "code": 408, "reason": None}  # fmt: skip
        assert await bus.publish("E_MSRP_GW_SETUP_FAILED", data) == 1
        await redis.publish(bus.channel, b"not json")  # skipped, with a warning
        await redis.publish(bus.channel, b"[1, 2]")
        await bus.publish("E_MSRP_GW_SESSION_ENDED", {"key": "a|b"})
        first = await asyncio.wait_for(anext(events), 5)
        second = await asyncio.wait_for(anext(events), 5)
    assert first == {
        "v": ENVELOPE_VERSION,
        "event": "E_MSRP_GW_SETUP_FAILED",
        "ts": 1234.5,
        "node": "gw1",
        "data": data,
    }
    assert second["event"] == "E_MSRP_GW_SESSION_ENDED"
    assert await bus.publish("E_X", {}) == 0  # nobody listens any more


async def test_default_channel_and_plain_iteration(redis: Redis, key_prefix: str) -> None:
    assert EventBus(redis, node="gw2").channel == "msrpgw:events"
    bus = EventBus(redis, node="gw2", prefix=key_prefix)
    sub = bus.subscribe()
    await sub.open()
    try:
        await bus.publish("E_PING", {"n": 1})
        async for event in sub:
            assert event["data"] == {"n": 1} and event["v"] == 1
            assert json.dumps(event)  # plain JSON types only
            break
    finally:
        await sub.aclose()
