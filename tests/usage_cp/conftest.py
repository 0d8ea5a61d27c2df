"""Usage (control-plane half) tests on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.store.db import make_engine, make_sessionmaker
from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401
from tests.usage_cp.env import UsageEnv, open_usage_env


@pytest.fixture
async def engine(migrated_db_url: str) -> AsyncIterator[AsyncEngine]:  # noqa: F811
    """An engine on a freshly migrated database of either backend."""
    eng = make_engine(migrated_db_url)
    try:
        yield eng
    finally:
        await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture
async def env(migrated_db_url: str) -> AsyncIterator[UsageEnv]:  # noqa: F811
    """Usage-only gRPC server (real auth) over a fresh migrated database."""
    async with open_usage_env(migrated_db_url) as e:
        yield e
