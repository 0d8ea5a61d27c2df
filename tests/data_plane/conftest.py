"""Fixtures: a control plane and a data plane per module (real processes), a fake provider per test.

Every test provisions its own org against its own fake provider, so tests sharing the
planes never see each other's models or keys. Tests that stop or restart a plane
start their own (``tests/data_plane/governance/test_resilience.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.data_plane.nodes import connected_data_plane
from tests.fakes.fixtures import fake_provider
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioned, provision_all_families

__all__ = ["fake_provider"]

MAX_BODY = 11 * 1024 * 1024  # room for a 10 MB model name; 413 above it


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """A control plane on a fresh SQLite file, shared by one test module."""
    db: Path = tmp_path_factory.mktemp("cp") / "cp.db"
    proc = start_control_plane(f"sqlite:///{db}")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A data plane connected to ``cp``, shared by one test module."""
    env = {"ODOCK_UPSTREAM_IDLE_SECONDS": "1", "ODOCK_CLIENT_HEADER_TIMEOUT_SECONDS": "1",
           "ODOCK_CLIENT_BODY_IDLE_SECONDS": "1", "ODOCK_CLIENT_BODY_TIMEOUT_SECONDS": "2",
           "ODOCK_MAX_BODY_BYTES": str(MAX_BODY)}  # fmt: skip
    with connected_data_plane(cp, env) as proc:
        yield proc


@pytest_asyncio.fixture
async def org(cp: ControlPlaneProcess, fake_provider: FakeProvider) -> AsyncIterator[Provisioned]:
    """A fresh org wired to this test's fake provider, with an all-models key."""
    yield await provision_all_families(cp, fake_provider)
