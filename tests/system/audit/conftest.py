"""One control plane, one data plane and one fake provider for the whole audit package.

Like tests/system/e2e: every async test runs on the package's event loop (the fake lives on it), and
the fake requires the provider keys it handed out, so a virtual key reaching it is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.fake_dns import fake_dns
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioned, Provisioner, provision_all_families

__all__ = ["fake_dns"]

_AUDIT_DIR = Path(__file__).parent
MAX_BODY_BYTES = 1 << 20


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if Path(str(item.path)).parent != _AUDIT_DIR:
            continue
        item.add_marker(pytest.mark.slow)  # multi-process
        if pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fake() -> AsyncIterator[FakeProvider]:
    """The fake upstream (every family), checking provider keys."""
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="package")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """The control plane process (SQLite)."""
    proc = start_control_plane(f"sqlite:///{tmp_path_factory.mktemp('audit-cp') / 'cp.db'}")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def dp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """The data plane process, connected to ``cp``, with a 1 MiB body limit and a 1 s header timeout."""
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env={
        "ODOCK_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "ODOCK_CLIENT_HEADER_TIMEOUT_SECONDS": "1",
        "ODOCK_NEGATIVE_CACHE_SECONDS": "0.2",
    })  # fmt: skip
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def gateway(dp: DataPlaneProcess) -> str:
    """The gateway's root URL, e.g. http://127.0.0.1:PORT."""
    return str(dp.url).rstrip("/")


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def org(cp: ControlPlaneProcess, fake: FakeProvider) -> Provisioned:
    """An org with the standard models on the fake and an all-models key."""
    return await provision_all_families(cp, fake)


@pytest_asyncio.fixture(loop_scope="package")
async def admin(cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    """An admin gRPC client (super-admin token)."""
    async with Provisioner.connect(cp.address, cp.admin_token) as client:
        yield client
