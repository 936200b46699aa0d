"""Failover measurement: owner SIGKILLed under a steady MESSAGE flow through another node.

`PYTHONPATH=. .venv/bin/python -m bench.failover` prints the message accounting (every 2xx
delivered? any non-2xx delivered anyway?) and the time from the kill to the first MESSAGE
answered 2xx again. Heartbeat TTL 1.5 s, as in tests/cluster.
"""

from __future__ import annotations

import asyncio
import signal
import time

from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.transaction import Timers
from gw.sip.transport import ListenSpec
from tests.cluster.test_multinode import send_message, start_nodes, stop_all
from tests.support.msrp_user import MsrpUser
from tests.support.redis_server import RedisServer, find_binary


async def main(count: int = 200, gap: float = 0.02) -> None:
    with RedisServer(binary=find_binary()) as redis:
        user = MsrpUser()
        await user.start()
        ua = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)))
        await ua.start([ListenSpec("UDP", "127.0.0.1", 0)])
        nodes = start_nodes(redis, user, 2)
        answered: dict[str, int] = {}
        sent_at: dict[str, float] = {}
        try:
            assert await send_message(ua, nodes[0], "start") == 200  # node 1 owns the key

            async def flow() -> None:
                for i in range(count):
                    body = f"f{i}"
                    sent_at[body] = time.monotonic()
                    answered[body] = await send_message(ua, nodes[1], body)
                    await asyncio.sleep(gap)

            task = asyncio.create_task(flow())
            await asyncio.sleep(1.0)
            killed = time.monotonic()
            nodes[0].stop(signal.SIGKILL)
            await task
        finally:
            await stop_all(nodes)
            await ua.close()
            await user.close()
        delivered = {r.body.decode() for r in user.received}
        ok = {b for b, code in answered.items() if code == 200}
        bad = {b: code for b, code in answered.items() if code != 200}
        first_ok = min(sent_at[b] for b in ok if sent_at[b] > killed)
        print(
            f"sent {len(answered)}, 2xx {len(ok)}, non-2xx {len(bad)} {sorted(set(bad.values()))}"
        )
        leaked = len(set(bad) & delivered)
        print(f"2xx not delivered: {len(ok - delivered)}; non-2xx delivered: {leaked}")
        print(f"failover: kill -> first MESSAGE answered 2xx: {first_ok - killed:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
