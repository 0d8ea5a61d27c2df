"""Usage metering on the data plane: unit tests of the extraction pieces and the spool, and
end-to-end tests with real control-plane and data-plane processes and the fake provider.

The module-scoped fixtures give each test module its own control plane, data plane (spooling
into a temporary directory) and fake provider; async tests of such a module run on the module's
event loop (``pytestmark = pytest.mark.asyncio(loop_scope="module")``), where the fake lives.
Tests that stop or restart a plane start their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.data_plane.usage.stack import Stack, UsageQueries, free_port, provision_priced, start_cp, start_dp
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fake() -> AsyncIterator[FakeProvider]:
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    proc = start_cp(tmp_path_factory.mktemp("cp") / "cp.db", f"127.0.0.1:{free_port()}")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    proc = start_dp(cp, tmp_path_factory.mktemp("spool"))
    try:
        yield proc
    finally:
        assert proc.stop() == 0
    assert "Traceback" not in proc.stderr_text(), proc.stderr_text()[-4000:]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def org(cp: ControlPlaneProcess, fake: FakeProvider) -> Provisioned:
    return await provision_priced(cp, fake)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def queries(cp: ControlPlaneProcess) -> AsyncIterator[UsageQueries]:
    q = UsageQueries(cp)
    yield q
    await q.close()


@pytest.fixture
def fresh_fake(fake: FakeProvider) -> None:
    """The module's fake provider with no recorded requests (for tests that count them)."""
    fake.reset()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """A control plane of the test's own (tests that stop and restart it)."""
    s = Stack(tmp_path)
    yield s
    s.cp.stop()
