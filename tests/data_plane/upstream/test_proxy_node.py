"""Through the whole data plane: a node started with HTTP_PROXY sends its upstream requests through the proxy.

Real processes (control plane, data plane), a real proxy on loopback (in a thread of its own, since
the node outlives each test's loop) and the fake provider behind it. The proxy's credentials come
from the node's environment and must appear nowhere in its log.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.data_plane.nodes import connected_data_plane
from tests.fakes.connect_proxy import ConnectProxy
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned

USER, PASSWORD = "node-proxy", "s3cr3t@proxy"
QUOTED = "s3cr3t%40proxy"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def proxy() -> Iterator[ConnectProxy]:
    """A proxy requiring credentials, served by a loop on its own thread for the module."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="connect-proxy", daemon=True)
    thread.start()
    server = ConnectProxy(credentials=(USER, PASSWORD))
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture(scope="module")
def dp(cp: ControlPlaneProcess, proxy: ConnectProxy) -> Iterator[DataPlaneProcess]:
    """A node whose environment names the proxy (upper case: gRPC reads only the lower-case forms)."""
    with connected_data_plane(cp, {"HTTP_PROXY": proxy.url(USER, QUOTED)}) as node:
        yield node


async def test_a_node_sends_upstream_requests_through_its_environment_proxy(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, proxy: ConnectProxy
) -> None:
    async with httpx.AsyncClient(base_url=dp.url) as client:
        resp = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {org.key}"},
            json={"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.status_code == 200, resp.text
    upstream = fake_provider.base_url("openai").removesuffix("/").split("://", 1)[1].split("/", 1)[0]
    assert any(line.startswith(f"POST http://{upstream}/") for line in proxy.lines), proxy.lines
    assert proxy.authorizations[-1] == BASIC
    rec = fake_provider.last()
    assert rec.headers["Authorization"] == f"Bearer {fake_provider.secret('openai')}"
    assert "Proxy-Authorization" not in rec.headers
    log = dp.stderr_text()
    assert f"http via 127.0.0.1:{proxy.port}" in log  # the start-up line names the proxy by host:port
    for secret in (PASSWORD, QUOTED, BASIC.removeprefix("Basic ")):
        assert secret not in log
