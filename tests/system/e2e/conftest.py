"""One control plane, one data plane and one fake provider for the whole e2e package.

Every e2e test runs on the package's event loop, because the fake provider lives on it.
The fake requires the provider keys it handed out, so a request reaching it with the wrong
key (or a virtual key) is refused upstream and the test sees it.

The control plane runs on SQLite; the modules in ``POSTGRES_MODULES`` (the SDK flow over
every family, and org isolation) run a second time against a control plane on PostgreSQL
(``tests/support/postgres.py``), with its own data plane, after everything on SQLite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.postgres import PostgresServer, pg_server
from tests.support.provision import Provisioned, Provisioner, provision_all_families

__all__ = ["pg_server"]

_E2E_DIR = Path(__file__).parent
MAX_BODY_BYTES = 1 << 20
POSTGRES_MODULES = frozenset({"test_endpoints", "test_isolation"})
# The SQLite run's parameter is None: the cache key of an unparametrized request too, so
# the parametrized modules share the package's SQLite planes instead of starting their own.
DATABASES = [pytest.param(None, id="sqlite"), pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.path.stem in POSTGRES_MODULES and "cp_database" in metafunc.fixturenames:
        metafunc.parametrize("cp_database", DATABASES, indirect=True, scope="package")


@pytest.hookimpl(trylast=True)  # after pytest's own reordering by fixture parameters
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if Path(str(item.path)).parent != _E2E_DIR:
            continue
        item.add_marker(pytest.mark.slow)  # multi-process
        if pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)
    # The PostgreSQL runs last in the package (a stable sort), so each stack starts once.
    e2e = [i for i, item in enumerate(items) if Path(str(item.path)).parent == _E2E_DIR]
    if e2e:
        block = items[e2e[0] : e2e[-1] + 1]
        block.sort(key=lambda item: _database(item) == "postgres")
        items[e2e[0] : e2e[-1] + 1] = block


def _database(item: pytest.Item) -> object:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("cp_database") if callspec is not None else None


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def fake() -> AsyncIterator[FakeProvider]:
    """The fake upstream (every family), checking provider keys."""
    async with FakeProvider(require_keys=True) as provider:
        yield provider


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture(scope="package")
def cp_database(request: pytest.FixtureRequest) -> str:
    """The control plane's database: "sqlite", or "postgres" in the second run of ``POSTGRES_MODULES``."""
    return str(getattr(request, "param", None) or "sqlite")


@pytest.fixture(scope="package")
def cp(cp_database: str, request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """The control plane process, on SQLite or on a fresh PostgreSQL database (it migrates it at start)."""
    server: PostgresServer | None = None
    if cp_database == "postgres":
        server = request.getfixturevalue("pg_server")
        url = server.create_database()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('e2e-cp') / 'cp.db'}"
    proc = start_control_plane(url)
    try:
        yield proc
    finally:
        proc.stop()
        if server is not None:
            server.drop_database(url)


@pytest.fixture(scope="package")
def dp(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """The data plane process, connected to ``cp``, with a small body limit to test 413 cheaply."""
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper,
                            extra_env={"ODOCK_MAX_BODY_BYTES": str(MAX_BODY_BYTES)})
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
    return await provision_all_families(cp, fake, default_models={"/v1/images/variations": "image-gen"})


@pytest_asyncio.fixture(loop_scope="package")
async def admin(cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    """An admin gRPC client (super-admin token)."""
    async with Provisioner.connect(cp.address, cp.admin_token) as client:
        yield client
