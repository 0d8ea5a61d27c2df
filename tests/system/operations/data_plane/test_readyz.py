"""``/readyz`` on the public port answers readiness alone; the details (org and key ids, limit
pools, RPC counts) are on the metrics listener's ``/readyz/details`` (issue 11: anyone who could
reach the data plane could read them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2, keys_pb2
from tests.data_plane.helpers import chat_call
from tests.support.provision import Provisioned, Provisioner, unique_name
from tests.system.operations.data_plane.script import fresh_connections
from tests.system.operations.data_plane.stack import OpsControlPlane, OpsDataPlane, start_ops_dp

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET_SHAPES = ("org_", "key_", "pools", "rpc", "node_id", "AcquireLeases", "LIMIT_METRIC")


async def _limited_key(cp: OpsControlPlane, org: Provisioned) -> tuple[str, str]:
    """A new key of ``org`` with a per-minute limit (so the node holds a pool naming it): (id, secret)."""
    async with Provisioner.connect(cp.process.address, cp.process.admin_token) as admin:
        key = keys_pb2.VirtualKey(org_id=org.org.id, name=unique_name("rdz"), all_models=True,
                                  limits=common_pb2.KeyLimits(requests_per_minute=1000))  # fmt: skip
        resp = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
        )
        return str(resp.key.id), str(resp.secret)


def _assert_public(resp: httpx.Response) -> None:
    assert resp.status_code == 200 and resp.json() == {"status": "ready"}, resp.text
    assert not any(shape in resp.text for shape in SECRET_SHAPES), resp.text


async def _pool_scopes_after_traffic(dp: OpsDataPlane, secret: str, workers: int) -> set[str]:
    """Requests with ``secret`` (each answer and ``/readyz`` public-only), then the scopes of the limit
    pools the workers report on the metrics listener."""
    assert dp.metrics is not None
    async with fresh_connections(dp.url) as client:
        for _ in range(4 * workers):  # fresh connections: every worker likely serves some
            call = chat_call("openai", "gpt-chat", key=secret)
            resp = await client.post(call.path, content=call.body, headers=call.headers)
            assert resp.status_code == 200, resp.text
            _assert_public(await client.get("/readyz"))
    await asyncio.sleep(1.2)  # supervised workers refresh their status every second
    async with httpx.AsyncClient(base_url=f"http://{dp.metrics}") as ops:
        details = await ops.get("/readyz/details")
    assert details.status_code == 200, details.text
    body = details.json()
    statuses = body["workers"] if workers > 1 else [body]
    assert body["ready"] is True and len(statuses) == workers
    for status in statuses:
        assert status["control_plane"] == "connected" and status["rpc"]
        assert set(status) >= {"cache", "usage", "limits", "node_id", "revision"}
        assert "dropped_records" in status["usage"]  # the usage counters moved here unchanged
    return {p["scope"] for s in statuses for p in s["limits"]["pools"]}


@pytest.mark.parametrize("workers", [1, 2])
async def test_public_readyz_shows_status_only_and_the_details_are_on_the_metrics_listener(
    workers: int, ops_cp: OpsControlPlane, org: Provisioned, tmp_path: Path
) -> None:
    key_id, secret = await _limited_key(ops_cp, org)
    dp: OpsDataPlane = await asyncio.to_thread(
        start_ops_dp, ops_cp.process, tmp_path / "spool", workers=workers
    )
    try:
        assert dp.metrics is not None
        # A per-minute pool is retired when its minute ends: a run that straddles a minute boundary
        # (a few percent of runs) sees none, so it tries once more, inside the next minute.
        for _attempt in range(2):
            scopes = await _pool_scopes_after_traffic(dp, secret, workers)
            if key_id in scopes:
                break
        assert key_id in scopes, scopes
    finally:
        assert await asyncio.to_thread(dp.process.stop) == 0
