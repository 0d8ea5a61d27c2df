"""Batches end to end: the official openai SDK through a real control plane and TWO data-plane nodes
(the e2e package's control plane) against the fake OpenAI upstream's stateful files and batches
(``tests/fakes/openai_files.py``). Every test runs on this package's loop, where the fake lives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.data_plane.usage.stack import USAGE_ENV
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner
from tests.system.e2e.batches.world import BatchOrg, provision
from tests.system.e2e.openai_surface.stack import UsageReader

_DIR = Path(__file__).parent


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if _DIR not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.slow)  # multi-process
        if pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fake() -> AsyncIterator[FakeProvider]:
    """This package's fake upstream, checking provider keys."""
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


def _node(cp: ControlPlaneProcess, spool: Path) -> DataPlaneProcess:
    env = {**USAGE_ENV, "ODOCK_USAGE_SPOOL_DIR": str(spool), "ODOCK_LIMIT_RECHECK_SECONDS": "0.3"}
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=env)
    proc.wait_connected()
    return proc


@pytest.fixture(scope="package")
def nodes(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two data-plane nodes on the same control plane: their root URLs."""
    first = _node(cp, tmp_path_factory.mktemp("batches-spool-1"))
    try:
        second = _node(cp, tmp_path_factory.mktemp("batches-spool-2"))
        try:
            yield str(first.url).rstrip("/"), str(second.url).rstrip("/")
        finally:
            second.stop()
    finally:
        first.stop()


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def admin(cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    async with Provisioner.connect(cp.address, cp.admin_token) as client:
        yield client


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def usage(cp: ControlPlaneProcess) -> AsyncIterator[UsageReader]:
    reader = UsageReader(cp)
    try:
        yield reader
    finally:
        await reader.close()


@pytest_asyncio.fixture(loop_scope="package")
async def org_a(admin: Provisioner, fake: FakeProvider) -> BatchOrg:
    return await provision(admin, fake)


@pytest_asyncio.fixture(loop_scope="package")
async def org_b(admin: Provisioner, fake: FakeProvider) -> BatchOrg:
    """A second org with the same model names and slugs on the same provider account."""
    return await provision(admin, fake)
