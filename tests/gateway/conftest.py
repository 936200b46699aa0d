"""Fixtures shared by the gateway end-to-end tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.page_user import EventWatch, PageUser
from tests.support.redis_server import RedisServer


@pytest.fixture
async def page() -> AsyncIterator[PageUser]:
    user = PageUser()
    await user.start()
    yield user
    await user.close()


@pytest.fixture
async def events(redis_server: RedisServer) -> AsyncIterator[EventWatch]:
    watch = EventWatch(redis_server.url)
    await watch.start()
    yield watch
    await watch.close()
