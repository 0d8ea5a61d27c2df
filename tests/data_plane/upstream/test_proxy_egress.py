"""The egress policy through proxies: a deployment's proxy is checked like an upstream, the environment's is not;
the upstream behind any proxy is checked by literal address or by what its name resolves to here.

Every refusal happens before a byte leaves: the proxy accepts no connection (or sees no CONNECT).
"""

from __future__ import annotations

import pytest

from data_plane.upstream import UpstreamClient, UpstreamUnreachable
from data_plane.upstream.egress import EGRESS, EgressDenied
from data_plane.upstream.network import Network
from data_plane.upstream.proxy import EnvironmentProxies
from odock.egress import DEFAULT_POLICY, policy_for
from tests.data_plane.upstream.conftest import Run
from tests.fakes.connect_proxy import ConnectProxy


def client(env_proxy: str = "") -> UpstreamClient:
    proxies = EnvironmentProxies.from_environ({"HTTPS_PROXY": env_proxy} if env_proxy else {})
    return UpstreamClient(limit=10, limit_per_host=10, connect_timeout=5.0, proxies=proxies)


async def attempt(c: UpstreamClient, url: str, network: Network | None = None) -> None:
    resp = await c.request("POST", url, {"Authorization": "Bearer sk-x"}, b"{}", network=network)
    resp.release()


def test_a_deployment_proxy_at_a_refused_address_is_refused(
    run: Run[None], fake_dns: dict[str, list[str]]
) -> None:
    async def scenario() -> None:
        fake_dns["api.provider.test"] = ["8.8.8.8"]
        async with ConnectProxy() as proxy:
            c = client()
            EGRESS.set(DEFAULT_POLICY)  # loopback (where the proxy is) refused
            with pytest.raises(EgressDenied):
                await attempt(c, "https://api.provider.test/v1/x", Network(proxy_url=proxy.url("u", "pw")))
            assert proxy.lines == [] and c.status()["in_use"] == 0
            EGRESS.set(policy_for(("127.0.0.1/32",)))  # an operator allowing the proxy's address
            with pytest.raises(UpstreamUnreachable):  # reached the proxy, which cannot reach the test name
                await attempt(c, "https://api.provider.test/v1/x", Network(proxy_url=proxy.url("u", "pw")))
            assert proxy.lines == ["CONNECT api.provider.test:443 HTTP/1.1"]
            await c.close()

    run(scenario())


def test_the_environment_proxy_is_not_checked_but_the_upstream_behind_it_is(
    run: Run[None], fake_dns: dict[str, list[str]]
) -> None:
    async def scenario() -> None:
        fake_dns["api.provider.test"] = ["8.8.8.8", "2606:4700:4700::1111"]
        fake_dns["metadata.rebind.test"] = ["8.8.8.8", "169.254.169.254"]
        async with ConnectProxy() as proxy:
            c = client(proxy.url())
            EGRESS.set(DEFAULT_POLICY)
            with pytest.raises(UpstreamUnreachable):  # the operator's proxy on loopback: used
                await attempt(c, "https://api.provider.test/v1/x")
            assert proxy.lines == ["CONNECT api.provider.test:443 HTTP/1.1"]
            for url in (
                "https://169.254.169.254/latest",
                "https://10.0.0.5/v1",
                "https://metadata.rebind.test/x",
            ):
                with pytest.raises(EgressDenied):  # a refused literal, or a name resolving to one
                    await attempt(c, url)
            assert len(proxy.lines) == 1
            with pytest.raises(UpstreamUnreachable):  # a name unknown here is left to the proxy
                await attempt(c, "https://only-the-proxy-knows.test/x")
            assert proxy.lines[-1] == "CONNECT only-the-proxy-knows.test:443 HTTP/1.1"
            EGRESS.set(policy_for(("metadata.rebind.test",)))  # an allow-listed name is not resolved
            with pytest.raises(UpstreamUnreachable):
                await attempt(c, "https://metadata.rebind.test/x")
            assert proxy.lines[-1] == "CONNECT metadata.rebind.test:443 HTTP/1.1"
            await c.close()

    run(scenario())
