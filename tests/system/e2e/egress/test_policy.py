"""A deployment's proxy is held to the control plane's egress policy like a base URL: one at a
loopback address is refused at create time (INVALID_ARGUMENT naming the deployment, never the
password) unless ``ODOCK_EGRESS_ALLOW`` allows it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio

from odock.v1 import models_pb2
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioner, family_enum
from tests.system.e2e.egress.conftest import Proxy
from tests.system.e2e.egress.stack import Org

PUBLIC = "https://8.8.8.8/v1"  # a public upstream: allowed by every policy (never contacted here)


@pytest.fixture(scope="module")
def strict_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """A control plane with the default egress policy (no ODOCK_EGRESS_ALLOW: loopback refused)."""
    proc = start_control_plane(f"sqlite:///{tmp_path_factory.mktemp('strict-cp') / 'cp.db'}",
                               extra_env={"ODOCK_EGRESS_ALLOW": ""})  # fmt: skip
    try:
        yield proc
    finally:
        proc.stop()


@pytest_asyncio.fixture(loop_scope="package")
async def strict_org(strict_cp: ControlPlaneProcess) -> AsyncIterator[Org]:
    async with Provisioner.connect(strict_cp.address, strict_cp.admin_token) as admin:
        yield await Org.create(admin)


async def _create(org: Org, proxy_url: str) -> models_pb2.Model:
    cred = await org.admin.create_credential(org.id, "openai", "sk-policy-test-0000000000001", name="policy")
    dep = models_pb2.Deployment(name="out", base_url=PUBLIC, credential=cred.name, upstream_slug="gpt-x",
                                proxy_url=proxy_url)  # fmt: skip
    model = models_pb2.Model(org_id=org.id, name="m", family=family_enum("openai"), deployments=[dep])
    created: models_pb2.Model = await org.admin.models.CreateModel(models_pb2.CreateModelRequest(model=model),
                                                                   metadata=org.admin.metadata)  # fmt: skip
    return created


async def test_a_loopback_proxy_is_refused_unless_the_policy_allows_it(
    strict_org: Org, org: Org, dep_proxy: Proxy
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _create(strict_org, dep_proxy.url)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = str(refused.value.details())
    assert "model.deployments[out].proxy_url" in message and "ODOCK_EGRESS_ALLOW" in message, message
    assert dep_proxy.password not in message and dep_proxy.url not in message
    listed = await strict_org.admin.models.ListModels(models_pb2.ListModelsRequest(org_id=strict_org.id),
                                                      metadata=strict_org.admin.metadata)  # fmt: skip
    assert list(listed.models) == []
    # The same model on the control plane whose ODOCK_EGRESS_ALLOW covers 127.0.0.0/8.
    allowed = await _create(org, dep_proxy.url)
    assert (
        allowed.deployments[0].proxy_url == f"http://{dep_proxy.user}:***@127.0.0.1:{dep_proxy.server.port}"
    )


async def test_the_strict_policy_accepts_the_same_deployment_direct(strict_org: Org) -> None:
    created = await _create(strict_org, "direct")
    assert created.deployments[0].proxy_url == "direct"
