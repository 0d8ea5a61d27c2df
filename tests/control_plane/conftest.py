"""Shared fixtures for the control-plane tests (every subdirectory: services, store, usage...)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.store.db import make_engine, make_sessionmaker
from tests.control_plane.admin_env import AdminEnv, open_admin_env
from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401


@pytest.fixture
async def cp(migrated_db_url: str) -> AsyncIterator[AdminEnv]:  # noqa: F811
    """The full control plane in-process over a fresh migrated database (both backends)."""
    async with open_admin_env(migrated_db_url) as env:
        yield env


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
