"""Several deployments behind one model (issue 14), end to end: one control plane, two data planes
(``dp_fast``: breaker cooldown 1 s, for speed, and a 3.5 s request deadline; ``dp_default``: every
routing setting at its default) and, per test, a fresh org whose models' deployments are switchable fake upstreams
(``tests/fakes/switchable.py``) on loopback, which the control plane's egress policy allows
(``tests/support/planes.py``). Every test runs on this package's event loop (the fakes live on it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.data_plane.usage.stack import USAGE_ENV
from tests.fakes.switchable import Family, SwitchableUpstream
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioner
from tests.system.e2e.routing.stack import Usage, World

_DIR = Path(__file__).parent
FAST_COOLDOWN_S = 1.0
REQUEST_TOTAL_S = 3.5  # no request of these tests needs longer; the deadline test relies on it
# A request the gateway sent just before it counted the failure (or 429) that took a deployment
# out of choice reaches the fake within this (generous for 2 busy cores).
RACE_S = 0.2
FAST_ENV = {"ODOCK_BREAKER_COOLDOWN": f"{FAST_COOLDOWN_S:g}", "ODOCK_REQUEST_TOTAL_SECONDS": f"{REQUEST_TOTAL_S:g}"}

MakeUpstream = Callable[..., Awaitable[SwitchableUpstream]]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if _DIR not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.slow)  # multi-process, timing
        if pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


@pytest.fixture(autouse=True)
def _fresh_fake() -> None:
    """The parent package's shared fake provider is not used here (each test has its own upstreams)."""


@pytest.fixture(scope="package")
def routing_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    proc = start_control_plane(f"sqlite:///{tmp_path_factory.mktemp('routing-cp') / 'cp.db'}")
    try:
        yield proc
    finally:
        proc.stop()


def _data_plane(cp: ControlPlaneProcess, spool: Path, env: dict[str, str]) -> DataPlaneProcess:
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper,
                            extra_env={**USAGE_ENV, "ODOCK_USAGE_SPOOL_DIR": str(spool), **env})
    proc.wait_connected()
    return proc


@pytest.fixture(scope="package")
def dp_fast(routing_cp: ControlPlaneProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    """A node whose breakers cool down for 1 s and whose requests last 3.5 s at most (the other routing
    settings at their defaults)."""
    proc = _data_plane(routing_cp, tmp_path_factory.mktemp("spool-fast"), FAST_ENV)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def dp_default(routing_cp: ControlPlaneProcess,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[DataPlaneProcess]:
    """A node with every routing setting at its default (breaker: 3 failures, 30 s cooldown)."""
    proc = _data_plane(routing_cp, tmp_path_factory.mktemp("spool-default"), {})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def gateway(dp_fast: DataPlaneProcess) -> str:
    """The fast node's root URL."""
    return str(dp_fast.url).rstrip("/")


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def admin(routing_cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    async with Provisioner.connect(routing_cp.address, routing_cp.admin_token) as client:
        yield client


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def usage(routing_cp: ControlPlaneProcess) -> AsyncIterator[Usage]:
    queries = Usage(routing_cp)
    try:
        yield queries
    finally:
        await queries.close()


@pytest_asyncio.fixture(loop_scope="package")
async def world(admin: Provisioner) -> World:
    """A fresh org and all-models key: fresh models, so no health state is shared between tests."""
    return await World.create(admin)


@pytest_asyncio.fixture(loop_scope="package")
async def upstream() -> AsyncIterator[MakeUpstream]:
    """``await upstream("a")``: a started switchable upstream (slug ``a-slug``), closed after the test."""
    started: list[SwitchableUpstream] = []

    async def make(name: str, family: Family = "openai") -> SwitchableUpstream:
        up = await SwitchableUpstream(name, f"{name}-slug", family).start()
        started.append(up)
        return up

    try:
        yield make
    finally:
        for up in started:
            await up.close()
