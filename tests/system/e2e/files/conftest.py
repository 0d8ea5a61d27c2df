"""The Files API end to end: the official openai SDK through a real control plane and data plane, against
the fake OpenAI upstream's stateful files (``tests/fakes/openai_files.py``).

The control plane is the e2e package's; this package starts its own data plane (uploads spooled in a
directory of its own, a small batch file limit so a 413 is cheap) and its own fake on its own loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.data_plane.usage.stack import USAGE_ENV
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import ModelSpec, Provisioned, Provisioner, provision_org

_DIR = Path(__file__).parent
BATCH_FILE_LIMIT = 256 * 1024  # ODOCK_MAX_BATCH_FILE_BYTES here
MODELS = (
    ModelSpec("gpt-files", "openai", "gpt-4o-mini-upstream"),
    ModelSpec("gpt-other", "openai", "gpt-other-upstream"),
    ModelSpec("claude", "anthropic", "claude-upstream"),
)


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
    """This package's fake upstream (on this package's loop), checking provider keys."""
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="package")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="package")
def dp(cp: ControlPlaneProcess, upload_dir: Path) -> Iterator[DataPlaneProcess]:
    env = {**USAGE_ENV, "ODOCK_UPLOAD_DIR": str(upload_dir), "ODOCK_MAX_BATCH_FILE_BYTES": str(BATCH_FILE_LIMIT),
           "ODOCK_MAX_BODY_BYTES": str(1 << 20)}  # usage records shipped within a fraction of a second
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=env)
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def gateway(dp: DataPlaneProcess) -> str:
    return str(dp.url).rstrip("/")


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def admin(cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    async with Provisioner.connect(cp.address, cp.admin_token) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="package")
async def org(admin: Provisioner, fake: FakeProvider) -> Provisioned:
    """A fresh org with the files models on the fake and an all-models key."""
    return await provision_org(admin, fake, MODELS)
