"""Shared fixtures for the control-plane tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.control_plane.admin_env import AdminEnv, open_admin_env
from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401


@pytest.fixture
async def cp(migrated_db_url: str) -> AsyncIterator[AdminEnv]:  # noqa: F811
    """The full control plane in-process over a fresh migrated database (both backends)."""
    async with open_admin_env(migrated_db_url) as env:
        yield env
