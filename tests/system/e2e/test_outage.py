"""Control-plane outage and revocation across nodes, seen through the SDKs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from odock import keyformat
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import Provisioned, Provisioner, provision_all_families
from tests.system.e2e.errors_sdk import call, check, raised


@pytest_asyncio.fixture(loop_scope="package")
async def second_node(cp: ControlPlaneProcess) -> AsyncIterator[DataPlaneProcess]:
    """Another data-plane node on the package control plane."""
    node = await asyncio.to_thread(start_data_plane, cp.address, cp.node_token, cp.pepper)
    try:
        await asyncio.to_thread(node.wait_connected)
        yield node
    finally:
        await asyncio.to_thread(node.stop)


async def _status(http: httpx.AsyncClient, url: str, key: str) -> int:
    resp = await http.post(f"{url}/v1/chat/completions", json={"model": "gpt-chat", "messages": []},
                           headers={"Authorization": f"Bearer {key}"})
    return resp.status_code


async def test_revocation_reaches_every_node_within_a_second(gateway: str, second_node: DataPlaneProcess,
                                                              org: Provisioned, admin: Provisioner,
                                                              fake: FakeProvider) -> None:
    row, key = await admin.create_key(org.org.id)
    nodes = [gateway, second_node.url]
    async with httpx.AsyncClient(timeout=10) as http:
        assert [await _status(http, n, key) for n in nodes] == [200, 200]  # cached on both now
        loop = asyncio.get_running_loop()
        await admin.revoke_key(org.org.id, row.id)
        revoked_at = loop.time()
        pending = set(nodes)
        while pending and loop.time() - revoked_at < 3.0:
            for n in list(pending):
                if await _status(http, n, key) == 401:
                    pending.discard(n)
            await asyncio.sleep(0.02)
        elapsed = loop.time() - revoked_at
    assert not pending, f"still serving a revoked key after {elapsed:.2f}s: {pending}"
    assert elapsed < 1.0, f"revocation took {elapsed:.2f}s"


@pytest_asyncio.fixture(loop_scope="package")
async def doomed(tmp_path: Path, fake: FakeProvider) -> AsyncIterator[tuple[ControlPlaneProcess, DataPlaneProcess,
                                                                           Provisioned]]:
    """A control plane of its own (the test stops it), a node on it, and an org."""
    own_cp = await asyncio.to_thread(start_control_plane, f"sqlite:///{tmp_path / 'cp.db'}")
    node: DataPlaneProcess | None = None
    try:
        setup = await provision_all_families(own_cp, fake)
        node = await asyncio.to_thread(start_data_plane, own_cp.address, own_cp.node_token, own_cp.pepper)
        await asyncio.to_thread(node.wait_connected)
        yield own_cp, node, setup
    finally:
        if node is not None:
            await asyncio.to_thread(node.stop)
        await asyncio.to_thread(own_cp.stop)


async def test_outage_serves_cached_keys_and_refuses_unknown_ones(
        doomed: tuple[ControlPlaneProcess, DataPlaneProcess, Provisioned], fake: FakeProvider) -> None:
    own_cp, node, setup = doomed
    for family, model in (("openai", "gpt-chat"), ("anthropic", "claude"), ("gemini", "gemini-flash")):
        await call(family, node.url, setup.key, model)  # warm the cache
    await asyncio.to_thread(own_cp.stop)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while node.status().get("control_plane") == "connected" and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert node.status().get("control_plane") != "connected"
    fake.reset()
    for family, model in (("openai", "gpt-chat"), ("anthropic", "claude"), ("gemini", "gemini-flash")):
        await call(family, node.url, setup.key, model)
    assert len(fake.requests) == 3
    stranger = keyformat.generate()
    for family in ("openai", "anthropic", "gemini", "vllm"):
        check(family, await raised(family, node.url, stranger, "gpt-chat"), 503, forbidden=stranger)
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(f"{node.url}/v1/chat/completions", json={"model": "gpt-chat", "messages": []},
                               headers={"Authorization": f"Bearer {stranger}"})
    assert resp.status_code == 503 and int(resp.headers["Retry-After"]) > 0
    assert len(fake.requests) == 3
