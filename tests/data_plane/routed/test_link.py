"""A route's deployments as the node receives them: each credential opened, its network, its fallbacks;
and the cache dropping a route when any deployment's credential changes."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from google.protobuf import duration_pb2

from data_plane.governance.cache import GovernanceCache
from data_plane.governance.domain import Deployment, Link, Route, RouteUnusable
from data_plane.governance.link import ControlPlaneLink
from data_plane.settings import CacheSizes, Settings
from data_plane.upstream.network import Network
from odock import sealing
from odock.v1 import common_pb2, node_pb2
from tests.data_plane.governance.test_cache import Source

ENV = {"ODOCK_NODE_TOKEN": "node-" + "t" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode()}


class Stub:
    """Stands for NodeService's stub: answers ResolveRoute with ``response``."""

    def __init__(self) -> None:
        self.response = node_pb2.Route()

    async def ResolveRoute(self, request: Any, **_: Any) -> node_pb2.Route:
        return self.response


def sealed(link: ControlPlaneLink, secret: bytes, credential_id: str) -> common_pb2.SealedSecret:
    box = sealing.seal(link._keys.public_key, secret, credential_id.encode())
    return common_pb2.SealedSecret(ephemeral_public_key=box.ephemeral_public_key, nonce=box.nonce,
                                   ciphertext=box.ciphertext)  # fmt: skip


@pytest.fixture
async def link() -> Any:
    client = ControlPlaneLink(Settings.from_env(ENV))
    stub = Stub()
    client._stub = stub  # type: ignore[assignment]
    yield client, stub
    await client.close()


def base_response(client: ControlPlaneLink) -> node_pb2.Route:
    return node_pb2.Route(
        org_id="org_1", model_id="mdl_1", model_name="m", family=common_pb2.PROVIDER_FAMILY_OPENAI, upstream_slug="gpt-a",
        base_url="https://a.example", enabled=True, credential_id="cred_a",
        credential_secret=sealed(client, b"sk-a", "cred_a"), revision=7,
    )  # fmt: skip


async def test_deployments_open_each_credential_with_its_network(link: Any) -> None:
    client, stub = link
    resp = base_response(client)
    resp.deployments.add(name="east", base_url="https://a.example", upstream_slug="gpt-a", credential_id="cred_a",
                         credential_secret=sealed(client, b"sk-a", "cred_a"), weight=9, priority=0)  # fmt: skip
    resp.deployments.add(
        name="west", base_url="https://b.example", upstream_slug="gpt-b", credential_id="cred_b",
        credential_secret=sealed(client, b"sk-b", "cred_b"), weight=1, priority=1,
        timeout=duration_pb2.Duration(seconds=12, nanos=500_000_000),
        proxy_url="http://user:pw@proxy:3128", ca_bundle="",
    )  # fmt: skip
    resp.fallbacks.extend(["other", "third"])
    stub.response = resp
    route, revision = await client.resolve_route("org_1", "m")
    assert revision == 7 and route is not None
    assert route.secret == b"sk-a" and route.timeout == 60.0  # top-level fields as before
    assert route.fallbacks == ("other", "third")
    east, west = route.deployments
    assert east == Deployment("east", "https://a.example", "gpt-a", 60.0, "cred_a", b"sk-a", 9, 0, None)
    assert (west.name, west.base_url, west.upstream_slug, west.credential_id, west.secret) == (
        "west", "https://b.example", "gpt-b", "cred_b", b"sk-b",
    )  # fmt: skip
    assert (west.timeout, west.weight, west.priority) == (12.5, 1, 1)
    assert west.network == Network("http://user:pw@proxy:3128", "")


async def test_no_deployments_means_the_top_level_fields(link: Any) -> None:
    client, stub = link
    stub.response = base_response(client)
    route, _ = await client.resolve_route("org_1", "m")
    assert route is not None and route.deployments == () and route.fallbacks == ()


async def test_a_deployment_credential_sealed_to_another_id_is_unusable(link: Any) -> None:
    client, stub = link
    resp = base_response(client)
    resp.deployments.add(name="b", base_url="https://b.example", upstream_slug="s", credential_id="cred_b",
                         credential_secret=sealed(client, b"sk-b", "cred_other"))  # fmt: skip
    stub.response = resp
    with pytest.raises(RouteUnusable):
        await client.resolve_route("org_1", "m")


async def test_cache_evicts_a_route_on_any_deployment_credential() -> None:
    source, link = Source(), Link(connected=True, last_contact=1000.0, revision=10)
    cache = GovernanceCache(source, link, CacheSizes(keys=10, routes=10, negative=10, ttl=60, negative_ttl=5),
                            max_staleness=30, clock=lambda: 1000.0)  # fmt: skip
    deps = tuple(Deployment(n, "http://x", "s", 30.0, c, b"k") for n, c in (("a", "cred_1"), ("b", "cred_2")))
    source.routes[("org_1", "m")] = Route("org_1", "mdl_1", "m", 1, "s", "http://x", 30.0, True, "cred_1", b"k",
                                          deployments=deps)  # fmt: skip
    await cache.route("org_1", "m")
    await cache.route("org_1", "m")
    assert source.calls["route"] == 1
    cache.evict_credential("org_1", "cred_2")  # the second deployment's credential rotated
    await cache.route("org_1", "m")
    assert source.calls["route"] == 2
    cache.evict_credential("org_1", "cred_1")
    await cache.route("org_1", "m")
    assert source.calls["route"] == 3
    await cache.close()
