"""The deployment identity: one per session store, shared by every node on it.

Loop detection marks what a deployment sends with this id (`X-Msrp-Gw`), so that a
request coming back to the same deployment is refused while another deployment's
traffic (another msrp-gw cluster with its own store, OpenSIPS) is ordinary traffic.
A node id would not do: nodes of one deployment must recognise each other's marks.
"""

from __future__ import annotations

import secrets

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from gw.store.client import StoreClient

__all__ = ["deployment_id"]


def _new_id() -> str:
    return f"d{secrets.token_hex(8)}"


async def deployment_id(redis: StoreClient, prefix: str, *, wait: float = 10.0) -> str:
    """The id kept at `<prefix>:deployment`, set by the first node that asks (SET NX:
    nodes starting together agree). Retries for `wait` seconds while the store is down;
    then the store's error."""
    name = f"{prefix}:deployment"
    value: bytes | str | None = None
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError, OSError)),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        stop=stop_after_delay(wait),
        reraise=True,
    ):
        with attempt:
            await redis.set(name, _new_id(), nx=True)
            value = await redis.get(name)
    if isinstance(value, bytes):
        value = value.decode()
    if not value:
        raise RuntimeError(f"{name} vanished while it was being read")
    return str(value)
