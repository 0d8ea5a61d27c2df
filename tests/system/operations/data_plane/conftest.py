"""Fixtures for the data plane's operability tests (metrics, overhead header, logs, shutdown).

Each module gets a fake provider (checking provider keys) on its own event loop, a control
plane with JSON logs and its metrics listener, and an org priced per ``tests.data_plane.usage.stack``.
Tests start their own data planes, so metrics start from zero and logs belong to one test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.data_plane.usage.stack import UsageQueries, provision_priced
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.operations.data_plane.stack import OpsControlPlane, start_ops_cp


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def ops_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsControlPlane]:
    cp = start_ops_cp(tmp_path_factory.mktemp("cp") / "cp.db")
    try:
        yield cp
    finally:
        cp.process.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def org(ops_cp: OpsControlPlane, fake: FakeProvider) -> Provisioned:
    return await provision_priced(ops_cp.process, fake)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queries(ops_cp: OpsControlPlane) -> AsyncIterator[UsageQueries]:
    q = UsageQueries(ops_cp.process)
    yield q
    await q.close()
