"""Pytest fixtures for the fake provider; import them into a conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.provider import FakeProvider


@pytest_asyncio.fixture
async def fake_provider() -> AsyncIterator[FakeProvider]:
    """A started fake provider, closed after the test."""
    async with FakeProvider() as fake:
        yield fake
