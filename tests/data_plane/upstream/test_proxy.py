"""Egress proxies, for real: a CONNECT proxy on loopback (tests/fakes/connect_proxy.py) between the client and upstream.

https upstreams are reached through a CONNECT tunnel with TLS end to end (the proxy sees only
``CONNECT host:port``), plain-http ones in absolute form. The environment's proxy applies unless
NO_PROXY says otherwise; a deployment's own proxy (or ``direct``) overrides it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from pathlib import Path

import pytest

from data_plane.upstream import UpstreamClient, UpstreamConnectTimeout, UpstreamUnreachable
from data_plane.upstream.network import Network
from data_plane.upstream.proxy import NO_ENVIRONMENT, EnvironmentProxies
from tests.data_plane.upstream.conftest import Run
from tests.data_plane.upstream.server import Server
from tests.data_plane.upstream.test_framing import read_all
from tests.fakes.connect_proxy import ConnectProxy
from tests.support.private_ca import PrivateCa

USER, PASSWORD = "svc-odock", "p@ss:w0rd/é"
QUOTED_PASSWORD = "p%40ss%3Aw0rd%2F%C3%A9"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return PrivateCa(tmp_path_factory.mktemp("private-ca"))


def trusting(ca: PrivateCa) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=ca.pem)
    return context


def client(env: dict[str, str] | None = None, context: ssl.SSLContext | None = None) -> UpstreamClient:
    proxies = EnvironmentProxies.from_environ(env) if env else NO_ENVIRONMENT
    return UpstreamClient(
        limit=100, limit_per_host=10, connect_timeout=5.0, ssl_context=context, proxies=proxies
    )


async def ok(c: UpstreamClient, url: str, network: Network | None = None, tenant: str = "") -> None:
    resp = await c.request(
        "POST", url, {"Authorization": "Bearer sk-x"}, b"{}", network=network, tenant=tenant
    )
    assert resp.status == 200 and await read_all(resp) == b"ok"
    resp.release()


def test_https_through_the_environment_proxy_with_connect(
    run: Run[None], ca: PrivateCa, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        server_ctx = ca.server_context(["localhost"], ["127.0.0.1"])
        async with (
            Server(ssl_context=server_ctx) as server,
            ConnectProxy(credentials=(USER, PASSWORD)) as proxy,
        ):
            c = client({"HTTPS_PROXY": proxy.url(USER, QUOTED_PASSWORD)}, trusting(ca))
            for _ in range(3):
                await ok(c, server.url())
            assert proxy.lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]  # one tunnel, kept alive
            assert proxy.authorizations == [BASIC]  # percent-decoded, as Basic
            assert server.connections == 1 and [r.target for r in server.requests] == ["/v1/x"] * 3
            assert server.requests[0].header("host") == f"127.0.0.1:{server.port}"
            assert server.requests[0].header("proxy-authorization") is None  # the proxy's, not the upstream's
            await c.close()

    with caplog.at_level(logging.DEBUG):
        run(scenario())


@pytest.mark.parametrize("refusal", ["407", "403", "502", "drop", "unreachable"])
def test_a_refusing_or_broken_proxy_is_unreachable_and_its_credentials_never_logged(
    run: Run[None], ca: PrivateCa, caplog: pytest.LogCaptureFixture, refusal: str
) -> None:
    async def scenario() -> None:
        async with Server(ssl_context=ca.server_context([], ["127.0.0.1"])) as server:
            async with ConnectProxy(credentials=(USER, "the-right-one")) as proxy:
                proxy.refuse_with = int(refusal) if refusal in ("403", "502") else 0
                proxy.drop = refusal == "drop"
                if refusal != "unreachable":
                    c = client({"https_proxy": proxy.url(USER, QUOTED_PASSWORD)}, trusting(ca))
                    with pytest.raises(UpstreamUnreachable) as caught:
                        await ok(c, server.url())
                    assert proxy.lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]
            if refusal == "unreachable":  # the proxy's port is closed now
                c = client({"https_proxy": proxy.url(USER, QUOTED_PASSWORD)}, trusting(ca))
                with pytest.raises(UpstreamUnreachable) as caught:
                    await ok(c, server.url())
            assert server.connections == 0 and c.status()["in_use"] == 0
            if refusal.isdigit():
                assert refusal in str(caught.value)
            await c.close()

    with caplog.at_level(logging.DEBUG):
        run(scenario())
    logged = caplog.text + " ".join(str(r.args) for r in caplog.records)
    assert "proxy 127.0.0.1:" in logged  # the proxy is named, by host and port
    if refusal.isdigit():
        assert f"status {refusal}" in logged
    for secret in (PASSWORD, QUOTED_PASSWORD, BASIC, BASIC.removeprefix("Basic "), "p@ss"):
        assert secret not in logged


def test_a_proxy_that_never_answers_is_bounded_by_the_connect_timeout(run: Run[None], ca: PrivateCa) -> None:
    async def scenario() -> None:
        async with (
            Server(ssl_context=ca.server_context([], ["127.0.0.1"])) as server,
            ConnectProxy() as proxy,
        ):
            proxy.stall = True
            proxies = EnvironmentProxies.from_environ({"HTTPS_PROXY": proxy.url()})
            c = UpstreamClient(limit=10, limit_per_host=10, connect_timeout=0.5, proxies=proxies)
            started = asyncio.get_running_loop().time()
            with pytest.raises(UpstreamConnectTimeout):
                await ok(c, server.url())
            assert asyncio.get_running_loop().time() - started < 5.0  # 0.5 s, with room for a busy machine
            assert proxy.connects == 1 and server.connections == 0 and c.status()["in_use"] == 0
            await c.close()

    run(scenario())


@pytest.mark.parametrize(("no_proxy", "host"), [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.0/8", "127.0.0.1"), ("*", "127.0.0.1"),
    ("localhost", "localhost"), ("example.com, .localhost", "localhost"), ("localhost:{port}", "localhost"),
])  # fmt: skip
def test_no_proxy_goes_direct(run: Run[None], ca: PrivateCa, no_proxy: str, host: str) -> None:
    async def scenario() -> None:
        server_ctx = ca.server_context(["localhost"], ["127.0.0.1"])
        async with Server(ssl_context=server_ctx) as server, ConnectProxy() as proxy:
            env = {"HTTPS_PROXY": proxy.url(), "NO_PROXY": no_proxy.format(port=server.port)}
            c = client(env, trusting(ca))
            await ok(c, server.url(host=host))
            assert proxy.lines == [] and server.connections == 1
            other = client({**env, "NO_PROXY": "example.com"}, trusting(ca))  # not listed: proxied
            await ok(other, server.url(host=host))
            assert proxy.lines == [f"CONNECT {host}:{server.port} HTTP/1.1"]
            await c.close()
            await other.close()

    run(scenario())


def test_http_upstream_through_the_proxy_in_absolute_form(run: Run[None]) -> None:
    async def scenario() -> None:
        async with Server() as server, ConnectProxy(credentials=(USER, PASSWORD)) as proxy:
            c = client(
                {"HTTP_PROXY": proxy.url(USER, QUOTED_PASSWORD), "HTTPS_PROXY": "http://unused.invalid:1"}
            )
            await ok(c, server.url("/v1/x?a=1"))
            assert proxy.lines == [f"POST http://127.0.0.1:{server.port}/v1/x?a=1 HTTP/1.1"]
            assert proxy.authorizations == [BASIC] and proxy.connects == 0
            assert [r.target for r in server.requests] == ["/v1/x?a=1"]
            assert server.requests[0].header("authorization") == "Bearer sk-x"
            await c.close()

    run(scenario())


def test_a_deployment_proxy_overrides_the_environment_and_direct_bypasses_it(
    run: Run[None], ca: PrivateCa
) -> None:
    async def scenario() -> None:
        async with (
            Server(ssl_context=ca.server_context([], ["127.0.0.1"])) as server,
            ConnectProxy() as env_proxy,
            ConnectProxy(credentials=("dep", "secret")) as dep_proxy,
        ):
            env_proxy.refuse_with = 502  # any request reaching it fails
            c = client({"HTTPS_PROXY": env_proxy.url()}, trusting(ca))
            await ok(c, server.url(), Network(proxy_url=dep_proxy.url("dep", "secret")))
            assert dep_proxy.connects == 1 and env_proxy.lines == []
            await ok(c, server.url(), Network(proxy_url="direct"))
            assert server.connections == 2 and env_proxy.lines == [] and dep_proxy.connects == 1
            with pytest.raises(UpstreamUnreachable):  # no network of its own: the environment's proxy
                await ok(c, server.url())
            assert env_proxy.connects == 1
            with pytest.raises(UpstreamUnreachable, match="proxy URL is unusable"):
                await ok(c, server.url(), Network(proxy_url="socks5://u:secret@127.0.0.1:1"))
            await c.close()

    run(scenario())


def test_private_ca_bundle_per_deployment(run: Run[None], ca: PrivateCa, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Server(ssl_context=ca.server_context(["localhost"], ["127.0.0.1"])) as server:
            c = client()  # the system store only
            with pytest.raises(UpstreamUnreachable) as caught:
                await ok(c, server.url())
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            trusted = Network(ca_bundle=ca.pem)
            for _ in range(3):
                await ok(c, server.url(), trusted)
            # one context, one pooled connection (the failed handshake never reached the server's handler)
            assert c._trust.built == 1 and server.connections == 1
            # the same bundle behind another key (another proxy setting) reuses the context
            await ok(c, server.url(), Network(proxy_url="direct", ca_bundle=ca.pem))
            assert c._trust.built == 1 and server.connections == 2
            with pytest.raises(UpstreamUnreachable, match="CA bundle"):
                await ok(c, server.url(), Network(ca_bundle="-----BEGIN CERTIFICATE-----\nnope\n"))
            await c.close()

    run(scenario())


def test_the_host_name_is_still_verified_with_a_bundle(run: Run[None], ca: PrivateCa) -> None:
    async def scenario() -> None:
        async with Server(ssl_context=ca.server_context(["other.example"], [])) as server:
            c = client()
            with pytest.raises(UpstreamUnreachable) as caught:
                await ok(c, server.url(), Network(ca_bundle=ca.pem))
            assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
            assert "match" in str(caught.value.__cause__) or "mismatch" in str(caught.value.__cause__)
            assert server.requests == []
            await c.close()

    run(scenario())


def test_private_ca_through_a_deployment_proxy(run: Run[None], ca: PrivateCa) -> None:
    async def scenario() -> None:
        async with (
            Server(ssl_context=ca.server_context(["localhost"], [])) as server,
            ConnectProxy() as proxy,
        ):
            c = client()
            await ok(c, server.url(host="localhost"), Network(proxy_url=proxy.url(), ca_bundle=ca.pem))
            assert proxy.lines == [f"CONNECT localhost:{server.port} HTTP/1.1"]
            await c.close()

    run(scenario())


def test_connections_are_pooled_per_network(run: Run[None], ca: PrivateCa) -> None:
    async def scenario() -> None:
        async with (
            Server(ssl_context=ca.server_context([], ["127.0.0.1"])) as server,
            ConnectProxy() as one,
            ConnectProxy() as two,
        ):
            c = client(context=trusting(ca))
            networks = [Network(proxy_url=one.url()), Network(proxy_url=two.url()), None]
            for _ in range(3):
                for network in networks:
                    await ok(c, server.url(), network)
            # three ways out, three connections, each reused: never one for another's traffic
            assert server.connections == 3 and len(server.requests) == 9
            assert one.connects == 1 and two.connects == 1
            await ok(c, server.url(), networks[0], tenant="other-key")  # and still per credential
            assert one.connects == 2 and server.connections == 4
            await c.close()

    run(scenario())
