"""The rest of the OpenAI surface (issue 15) from the outside: the official openai SDK (and httpx for raw
checks) through a real control plane and data plane, against the fake OpenAI upstream's audio,
moderations, files and batches (``tests/fakes/openai_audio.py``, ``openai_files.py``).

Written from the issue and OpenAI's API reference, not from the implementation. One control plane
(the e2e package's), one data plane of this package (usage flushed quickly; small body limits so 413s
are cheap: ``BODY_LIMIT`` for JSON/audio, ``UPLOAD_LIMIT`` for files, ``BATCH_FILE_LIMIT`` for batch
input), and one fake upstream that checks provider keys. Every test runs on this package's loop.
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
from tests.support.provision import Provisioner
from tests.system.e2e.openai_surface.stack import (
    BATCH_FILE_LIMIT,
    BODY_LIMIT,
    UPLOAD_LIMIT,
    Surface,
    UsageReader,
    provision_surface,
)

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
    # test_isolation.py also runs on PostgreSQL (the e2e package parametrizes modules of that name):
    # those runs go last (a stable sort), so each control plane and data plane starts once.
    mine = [i for i, item in enumerate(items) if _DIR in Path(str(item.path)).parents]
    if mine:
        block = items[mine[0] : mine[-1] + 1]
        block.sort(key=lambda item: getattr(getattr(item, "callspec", None), "params", {}).get("cp_database")
                   == "postgres")
        items[mine[0] : mine[-1] + 1] = block


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fake() -> AsyncIterator[FakeProvider]:
    """This package's fake upstream (it lives on this package's loop), checking provider keys."""
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="package")
def dp(cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    env = {**USAGE_ENV, "ODOCK_USAGE_SPOOL_DIR": str(tmp_path_factory.mktemp("surface-spool")),
           "ODOCK_MAX_BODY_BYTES": str(BODY_LIMIT), "ODOCK_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
           "ODOCK_MAX_BATCH_FILE_BYTES": str(BATCH_FILE_LIMIT)}
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


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def usage(cp: ControlPlaneProcess) -> AsyncIterator[UsageReader]:
    reader = UsageReader(cp)
    try:
        yield reader
    finally:
        await reader.close()


@pytest_asyncio.fixture(loop_scope="package")
async def org_a(admin: Provisioner, fake: FakeProvider) -> Surface:
    """A fresh org (default model for /v1/files: gpt-chat) with every surface model and an all-models key."""
    return await provision_surface(admin, fake, files_default="gpt-chat")


@pytest_asyncio.fixture(loop_scope="package")
async def org_b(admin: Provisioner, fake: FakeProvider) -> Surface:
    """A second fresh org with the same model names and slugs on the same provider account, no defaults."""
    return await provision_surface(admin, fake)
