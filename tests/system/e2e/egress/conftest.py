"""The way out (issue 14), end to end: one control plane (SQLite, loopback allowed by its egress
policy), data planes started with different proxy / trust environments, TLS fake upstreams whose
certificates only the tests' private CA signs, and two real CONNECT proxies requiring credentials.
Every test runs on this package's event loop (the fakes and proxies live on it)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.fakes.connect_proxy import ConnectProxy
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.private_ca import PrivateCa
from tests.support.provision import Provisioner
from tests.system.e2e.egress.stack import Org, TlsUpstream

_DIR = Path(__file__).parent

MakeUpstream = Callable[[str], Awaitable[TlsUpstream]]


@dataclass
class Proxy:
    """A started CONNECT proxy and the credentials it requires."""

    server: ConnectProxy
    user: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url(self.user, self.password)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    marker = pytest.mark.asyncio(loop_scope="package")
    for item in items:
        if _DIR not in Path(str(item.path)).parents:
            continue
        item.add_marker(pytest.mark.slow)  # multi-process
        if pytest_asyncio.is_async_test(item):
            item.add_marker(marker, append=False)


@pytest.fixture(autouse=True)
def _fresh_fake() -> None:
    """The parent package's shared fake provider is not used here."""


@pytest.fixture(scope="package")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return PrivateCa(tmp_path_factory.mktemp("egress-ca"))


@pytest.fixture(scope="package")
def ca_file(ca: PrivateCa) -> Path:
    path = ca.directory / "ca.pem"
    path.write_text(ca.pem)
    return path


@pytest.fixture(scope="package")
def cp_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("egress-cp") / "cp.db"


@pytest.fixture(scope="package")
def egress_cp(cp_db: Path) -> Iterator[ControlPlaneProcess]:
    proc = start_control_plane(f"sqlite:///{cp_db}", extra_env={"ODOCK_LOG_LEVEL": "debug"})
    try:
        yield proc
    finally:
        proc.stop()


def _proxy_fixture(prefix: str) -> Callable[[], AsyncIterator[Proxy]]:
    async def fixture() -> AsyncIterator[Proxy]:
        user, password = f"{prefix}-user", f"{prefix}-pw-{secrets.token_hex(8)}"
        async with ConnectProxy(credentials=(user, password)) as server:
            yield Proxy(server, user, password)

    return fixture


env_proxy = pytest_asyncio.fixture(scope="package", loop_scope="package", name="env_proxy")(
    _proxy_fixture("env")
)
dep_proxy = pytest_asyncio.fixture(scope="package", loop_scope="package", name="dep_proxy")(
    _proxy_fixture("dep")
)


def _node(cp: ControlPlaneProcess, env: dict[str, str]) -> Iterator[DataPlaneProcess]:
    # Debug logs: the strongest check that nothing secret is ever written.
    proc = start_data_plane(
        cp.address, cp.node_token, cp.pepper, extra_env={"ODOCK_LOG_LEVEL": "debug", **env}
    )
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def dp_plain(egress_cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """No proxy and no extra trust in its environment."""
    yield from _node(egress_cp, {})


@pytest.fixture(scope="package")
def dp_proxied(egress_cp: ControlPlaneProcess, env_proxy: Proxy) -> Iterator[DataPlaneProcess]:
    """``HTTPS_PROXY`` names ``env_proxy`` with its credentials."""
    yield from _node(egress_cp, {"HTTPS_PROXY": env_proxy.url})


@pytest.fixture(scope="package")
def dp_no_proxy(egress_cp: ControlPlaneProcess, env_proxy: Proxy) -> Iterator[DataPlaneProcess]:
    """``HTTPS_PROXY`` as ``dp_proxied``'s, and ``NO_PROXY=127.0.0.1``."""
    yield from _node(egress_cp, {"HTTPS_PROXY": env_proxy.url, "NO_PROXY": "127.0.0.1"})


@pytest.fixture(scope="package")
def dp_ssl_cert_file(egress_cp: ControlPlaneProcess, ca_file: Path) -> Iterator[DataPlaneProcess]:
    """``SSL_CERT_FILE`` names the private CA (the "system store" route, no bundle)."""
    yield from _node(egress_cp, {"SSL_CERT_FILE": str(ca_file)})


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def admin(egress_cp: ControlPlaneProcess) -> AsyncIterator[Provisioner]:
    async with Provisioner.connect(egress_cp.address, egress_cp.admin_token) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="package")
async def org(admin: Provisioner) -> Org:
    return await Org.create(admin)


@pytest_asyncio.fixture(loop_scope="package")
async def upstream(ca: PrivateCa) -> AsyncIterator[MakeUpstream]:
    """``await upstream("a")``: a started TLS upstream (slug ``a-slug``), closed after the test."""
    started: list[TlsUpstream] = []

    async def make(name: str) -> TlsUpstream:
        up = TlsUpstream(name, f"{name}-slug", ssl_context=ca.server_context([], ["127.0.0.1"]))
        await up.start()
        started.append(up)
        return up

    try:
        yield make
    finally:
        for up in started:
            await up.close()
