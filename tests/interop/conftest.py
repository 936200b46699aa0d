"""Fixtures of the interop tests (peers of their own are in tests/support)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.page_user import PageUser


@pytest.fixture
async def page() -> AsyncIterator[PageUser]:
    """A page-mode user (gw.sip) on free loopback ports."""
    user = PageUser()
    await user.start()
    yield user
    await user.close()


@pytest.fixture
async def page_b() -> AsyncIterator[PageUser]:
    """A second page-mode user, for a second deployment."""
    user = PageUser()
    await user.start()
    yield user
    await user.close()
