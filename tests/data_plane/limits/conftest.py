"""Limits across data-plane nodes: real control-plane and data-plane processes, the fake provider.

Module-scoped fake provider (its event loop is the module's); each test starts the planes it
needs, since most of them stop or restart one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.fakes.provider import FakeProvider
from tests.support.postgres import pg_server  # noqa: F401


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(require_keys=True) as provider:
        yield provider
