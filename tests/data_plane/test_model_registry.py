"""The model registry as a data plane sees it (issue 13): the Route and listing summaries its
link parses, the OpenAI listing's extra fields read through the openai SDK, and a registry
change on the control plane reaching the node's listing (the watch) without a restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anthropic
import openai
from google.protobuf.field_mask_pb2 import FieldMask

from data_plane.governance.link import ControlPlaneLink
from data_plane.providers.translator import JSON_OUTPUT, STREAMING, TOOLS, VISION
from data_plane.settings import Settings
from odock.v1 import common_pb2, models_pb2
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner

REGISTRY_KEYS = frozenset({"openai_compatible", "context_window", "capabilities"})
NO_CAPABILITIES = {"tools": False, "vision": False, "json_output": False, "streaming": False}


async def _update(
    cp: ControlPlaneProcess, org: Provisioned, name: str, paths: list[str], **fields: Any
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        await admin.models.UpdateModel(
            models_pb2.UpdateModelRequest(
                model=models_pb2.Model(org_id=org.org.id, name=name, **fields),
                update_mask=FieldMask(paths=paths),
            ),
            metadata=admin.metadata,
        )


async def _entries(dp: DataPlaneProcess, key: str) -> dict[str, dict[str, Any]]:
    async with openai.AsyncOpenAI(api_key=key, base_url=dp.url + "/v1", max_retries=0) as client:
        return {m.id: m.to_dict() async for m in client.models.list()}


async def test_the_link_parses_the_registry_into_route_and_summary(
    cp: ControlPlaneProcess, org: Provisioned
) -> None:
    caps = models_pb2.ModelCapabilities(tools=True, vision=True, json_output=True, streaming=True)
    fields = {
        "openai_compatible": True,
        "context_window": 200_000,
        "max_output_tokens": 8192,
        "capabilities": caps,
    }
    await _update(cp, org, "claude", list(fields), **fields)
    settings = Settings.from_env({
        "ODOCK_CP_ADDRESS": cp.address, "ODOCK_NODE_TOKEN": cp.node_token, "ODOCK_KEY_PEPPER": cp.secrets.pepper_b64,
    })  # fmt: skip
    link = ControlPlaneLink(settings)
    try:
        route, _ = await link.resolve_route(org.org.id, "claude")
        plain, _ = await link.resolve_route(org.org.id, "gemini-flash")
        summaries, _ = await link.list_routes(org.org.id)
    finally:
        await link.close()
    assert route is not None and plain is not None
    assert (route.openai_compatible, route.context_window, route.max_output_tokens) == (True, 200_000, 8192)
    assert route.capabilities == {TOOLS, VISION, JSON_OUTPUT, STREAMING}
    assert (plain.openai_compatible, plain.context_window, plain.max_output_tokens) == (False, 0, 0)
    assert plain.capabilities == frozenset()
    by_name = {s.name: s for s in summaries}
    assert (by_name["claude"].openai_compatible, by_name["claude"].context_window) == (True, 200_000)
    assert by_name["claude"].capabilities == {TOOLS, VISION, JSON_OUTPUT, STREAMING}
    assert by_name["gpt-chat"].openai_compatible is False and by_name["gpt-chat"].capabilities == frozenset()


async def test_openai_listing_shows_the_registry_and_follows_updates(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    before = await _entries(dp, org.key)
    # The listing holds what OpenAI's chat completions serve: openai-family models whatever the
    # flag says, the others only once opted in; retrieve still answers for any of the key's models.
    assert sorted(before) == sorted(n for n, m in org.models.items() if m.family == common_pb2.PROVIDER_FAMILY_OPENAI)
    assert all(e["openai_compatible"] is True for e in before.values())
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        for name in ("claude", "llama"):
            before[name] = (await client.models.retrieve(name)).to_dict()
    assert before["claude"]["openai_compatible"] is False and before["llama"]["openai_compatible"] is False
    assert all(e["context_window"] is None and e["capabilities"] == NO_CAPABILITIES for e in before.values())
    # OpenAI's own fields are untouched
    assert {k: before["claude"][k] for k in ("id", "object", "owned_by")} == {
        "id": "claude", "object": "model", "owned_by": "anthropic",
    }  # fmt: skip
    caps = models_pb2.ModelCapabilities(tools=True, streaming=True)
    await _update(cp, org, "claude", ["openai_compatible", "context_window", "capabilities"],
                  openai_compatible=True, context_window=200_000, capabilities=caps)  # fmt: skip
    await _update(cp, org, "gpt-chat", ["context_window"], context_window=1_047_576)
    await _update(cp, org, "llama", ["openai_compatible"], openai_compatible=True)  # vLLM: passed through
    deadline = time.monotonic() + 15
    while True:  # the node hears of the change on its watch and refetches the listing
        after = await _entries(dp, org.key)
        if (
            "claude" in after
            and after["gpt-chat"]["context_window"]
            and "llama" in after
            or time.monotonic() > deadline
        ):
            break
        await asyncio.sleep(0.1)
    assert after["claude"]["openai_compatible"] is True and after["claude"]["context_window"] == 200_000
    assert after["claude"]["capabilities"] == {**NO_CAPABILITIES, "tools": True, "streaming": True}
    assert after["gpt-chat"]["context_window"] == 1_047_576 and after["gpt-chat"]["openai_compatible"] is True
    assert after["llama"] == {**before["llama"], "openai_compatible": True}
    touched = ("claude", "gpt-chat", "llama")
    assert {n: after[n] for n in after if n not in touched} == {
        n: before[n] for n in before if n not in touched
    }
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        one = (await client.models.retrieve("claude")).to_dict()
    assert one == after["claude"]


async def test_other_listings_are_unchanged(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    await _update(cp, org, "claude", ["openai_compatible", "context_window"], openai_compatible=True,
                  context_window=200_000)  # fmt: skip
    await asyncio.sleep(0.5)
    async with anthropic.AsyncAnthropic(api_key=org.key, base_url=dp.url, max_retries=0) as client:
        page = await client.models.list()
        raw = await client.get("/v1/models/claude", cast_to=object)
    assert [m.id for m in page.data] == ["claude"]
    assert isinstance(raw, dict) and raw["id"] == "claude" and REGISTRY_KEYS.isdisjoint(raw)
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1/vllm", max_retries=0) as vllm:
        entries = [m.to_dict() async for m in vllm.models.list()]
    assert entries and all(REGISTRY_KEYS.isdisjoint(e) for e in entries)
