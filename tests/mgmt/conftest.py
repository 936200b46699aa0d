"""Fixtures: a management server on an OS-picked loopback port, with short timeouts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gw.mgmt import Limits, MgmtServer

FAST = Limits(read_timeout=0.5, idle_timeout=0.5, write_timeout=2.0, handler_timeout=1.0)


@pytest.fixture
async def server() -> AsyncIterator[MgmtServer]:
    srv = MgmtServer("127.0.0.1:0", limits=FAST)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.close()
