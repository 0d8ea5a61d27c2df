"""Governance through the cache: single flight, zero steady-state calls, invalidations, org isolation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from google.protobuf import field_mask_pb2

from odock.v1 import models_pb2
from tests.data_plane.helpers import assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import ModelSpec, Provisioned, Provisioner, provision_all_families


def rpc_calls(dp: DataPlaneProcess) -> dict[str, int]:
    rpc = dp.status()["rpc"]
    assert isinstance(rpc, dict)
    return {k: int(v) for k, v in rpc.items()}


@pytest.fixture
def dp2(cp: ControlPlaneProcess) -> Iterator[DataPlaneProcess]:
    """A second data-plane node on the same control plane."""
    proc = start_data_plane(cp.address, cp.node_token, cp.pepper)
    try:
        proc.wait_connected()
        yield proc
    finally:
        proc.stop()


async def test_concurrent_first_requests_for_one_key_make_one_lookup(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    before = rpc_calls(dp)
    call = chat_call("openai", "gpt-chat", key=org.key)
    async with httpx.AsyncClient(
        base_url=dp.url, timeout=20, limits=httpx.Limits(max_connections=60)
    ) as client:
        answers = await asyncio.gather(*(send(client, call) for _ in range(40)))
        assert [r.status_code for r in answers] == [200] * 40
        mid = rpc_calls(dp)
        assert mid["ResolveKey"] - before.get("ResolveKey", 0) == 1
        assert mid["ResolveRoute"] - before.get("ResolveRoute", 0) == 1
        # steady state: no control-plane calls at all
        for family, model in (("openai", "gpt-chat"), ("anthropic", "claude")):
            await send(client, chat_call(family, model, key=org.key))
        warm = rpc_calls(dp)
        for _ in range(3):
            for family, model in (("openai", "gpt-chat"), ("anthropic", "claude")):
                assert (await send(client, chat_call(family, model, key=org.key))).status_code == 200
        assert rpc_calls(dp) == warm
    assert len(fake_provider.requests) == 40 + 2 + 6


async def test_revocation_reaches_two_running_nodes_within_a_second(
    dp: DataPlaneProcess, dp2: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        key_row, key = await admin.create_key(org.org.id)
        call = chat_call("openai", "gpt-chat", key=key)
        async with httpx.AsyncClient(timeout=5) as client:
            for node in (dp, dp2):
                resp = await client.post(node.url + call.path, content=call.body, headers=call.headers)
                assert resp.status_code == 200  # cached on both nodes now
            await admin.revoke_key(org.org.id, key_row.id)
            revoked_at = time.monotonic()
            pending = {dp.url, dp2.url}
            while pending and time.monotonic() - revoked_at < 1.0:
                for url in sorted(pending):
                    resp = await client.post(url + call.path, content=call.body, headers=call.headers)
                    if resp.status_code == 401:
                        assert_error("openai", resp, 401, "api_key_revoked")
                        pending.discard(url)
                await asyncio.sleep(0.01)
            assert not pending, f"still accepted after 1 s by {pending}"


async def test_model_changes_apply_without_restart(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    call = chat_call("openai", "gpt-chat", key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=5) as client:
        assert (await send(client, call)).status_code == 200
        assert fake_provider.last().json()["model"] == org.slug("gpt-chat")
        async with Provisioner.connect(cp.address, cp.admin_token) as admin:
            model = org.models["gpt-chat"]
            model.upstream_slug = "brand-new-slug"
            await admin.models.UpdateModel(
                models_pb2.UpdateModelRequest(
                    model=model, update_mask=field_mask_pb2.FieldMask(paths=["upstream_slug"])
                ),
                metadata=admin.metadata,
            )
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert (await send(client, call)).status_code == 200
            if fake_provider.last().json()["model"] == "brand-new-slug":
                break
            await asyncio.sleep(0.01)
        assert fake_provider.last().json()["model"] == "brand-new-slug"


async def test_orgs_are_isolated(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    a = await provision_all_families(cp, fake_provider, [ModelSpec("shared", "openai", "slug-a")])
    b = await provision_all_families(
        cp,
        fake_provider,
        [ModelSpec("shared", "openai", "slug-b"), ModelSpec("only-b", "openai", "slug-only-b")],
    )
    async with httpx.AsyncClient(base_url=dp.url, timeout=5) as client:
        assert (await send(client, chat_call("openai", "shared", key=a.key))).status_code == 200
        assert fake_provider.last().json()["model"] == "slug-a"
        assert fake_provider.last().headers["Authorization"] == f"Bearer {fake_provider.secret('openai')}"
        assert (await send(client, chat_call("openai", "shared", key=b.key))).status_code == 200
        assert fake_provider.last().json()["model"] == "slug-b"
        assert_error(
            "openai", await send(client, chat_call("openai", "only-b", key=a.key)), 404, "model_not_found"
        )
        listed = (await client.get("/v1/models", headers={"Authorization": f"Bearer {a.key}"})).json()
        assert [m["id"] for m in listed["data"]] == ["shared"]
