"""The model registry fields of issue 13 (openai_compatible, context_window, max_output_tokens,
capabilities) over real gRPC, on SQLite and PostgreSQL: stored, validated, updated by mask, and
sent to the data planes (ResolveRoute, ListRoutes, the watch)."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from odock.sealing import NodeKeyPair
from odock.v1 import models_pb2, node_pb2
from tests.control_plane.admin_env import ANTHROPIC, AdminEnv, expect

INVALID = grpc.StatusCode.INVALID_ARGUMENT
ALL_CAPS = models_pb2.ModelCapabilities(tools=True, vision=True, json_output=True, streaming=True)


async def _claude(cp: AdminEnv, **fields: Any) -> tuple[str, models_pb2.Model]:
    org = await cp.org("acme")
    await cp.credential(org.id, "claude", family=ANTHROPIC)
    model = await cp.model(
        org.id, "sonnet", "claude", family=ANTHROPIC, upstream_slug="claude-sonnet-4-5",
        base_url="https://api.anthropic.com", **fields,
    )  # fmt: skip
    return org.id, model


async def _get(cp: AdminEnv, org_id: str, name: str = "sonnet") -> models_pb2.Model:
    got: models_pb2.Model = await cp.models.GetModel(
        models_pb2.GetModelRequest(org_id=org_id, name=name), metadata=cp.su
    )
    return got


async def _update(cp: AdminEnv, org_id: str, paths: list[str], **fields: Any) -> models_pb2.Model:
    updated: models_pb2.Model = await cp.models.UpdateModel(
        models_pb2.UpdateModelRequest(
            model=models_pb2.Model(org_id=org_id, name="sonnet", **fields), update_mask=FieldMask(paths=paths)
        ),
        metadata=cp.su,
    )
    return updated


async def test_defaults_when_absent(cp: AdminEnv) -> None:
    org_id, model = await _claude(cp)
    assert model.HasField("openai_compatible") and model.openai_compatible is False
    assert model.context_window == 0 and model.max_output_tokens == 0
    assert model.capabilities == models_pb2.ModelCapabilities()
    assert await _get(cp, org_id) == model


async def test_create_get_list_round_trip(cp: AdminEnv) -> None:
    caps = models_pb2.ModelCapabilities(tools=True, streaming=True)
    org_id, model = await _claude(
        cp, openai_compatible=True, context_window=200_000, max_output_tokens=8192, capabilities=caps
    )
    assert (model.openai_compatible, model.context_window, model.max_output_tokens) == (True, 200_000, 8192)
    assert model.capabilities == caps
    assert await _get(cp, org_id) == model
    listed = await cp.models.ListModels(models_pb2.ListModelsRequest(org_id=org_id), metadata=cp.su)
    assert list(listed.models) == [model]


async def test_bounds_are_one_line_errors_naming_the_field(cp: AdminEnv) -> None:
    org = await cp.org("acme")
    await cp.credential(org.id)
    cases: dict[str, list[dict[str, Any]]] = {
        "model.context_window": [{"context_window": -1}, {"context_window": 10**8 + 1}],
        "model.max_output_tokens": [{"max_output_tokens": -5}, {"max_output_tokens": 10**7 + 1}],
    }
    for field, bad in cases.items():
        for fields in bad:
            msg = await expect(INVALID, cp.model(org.id, "m", **fields))
            assert msg.startswith(f"{field}:") and "\n" not in msg, msg
    top = await cp.model(org.id, "top", context_window=10**8, max_output_tokens=10**7)
    assert (top.context_window, top.max_output_tokens) == (10**8, 10**7)


async def test_update_by_mask_touches_only_the_named_fields(cp: AdminEnv) -> None:
    org_id, model = await _claude(cp, context_window=100_000, capabilities=ALL_CAPS)
    flipped = await _update(cp, org_id, ["openai_compatible"], openai_compatible=True, context_window=5)
    assert flipped.openai_compatible is True and flipped.context_window == 100_000
    assert flipped.capabilities == ALL_CAPS and flipped.upstream_slug == model.upstream_slug
    caps = models_pb2.ModelCapabilities(vision=True)
    changed = await _update(
        cp, org_id, ["context_window", "max_output_tokens", "capabilities"],
        context_window=1_000_000, max_output_tokens=64_000, capabilities=caps,
    )  # fmt: skip
    assert (changed.context_window, changed.max_output_tokens) == (1_000_000, 64_000)
    assert changed.capabilities == caps
    assert changed.openai_compatible is True
    cleared = await _update(cp, org_id, ["capabilities", "openai_compatible"])
    assert cleared.capabilities == models_pb2.ModelCapabilities() and cleared.openai_compatible is False
    assert await _get(cp, org_id) == cleared
    msg = await expect(INVALID, _update(cp, org_id, ["max_output_tokens"], max_output_tokens=10**7 + 1))
    assert msg.startswith("model.max_output_tokens:")
    assert (await _get(cp, org_id)).max_output_tokens == 64_000  # a refused update changes nothing


async def test_routes_and_summaries_carry_the_registry(cp: AdminEnv) -> None:
    caps = models_pb2.ModelCapabilities(tools=True, json_output=True)
    org_id, _ = await _claude(
        cp, openai_compatible=True, context_window=200_000, max_output_tokens=8192, capabilities=caps
    )
    await cp.model(org_id, "plain", "claude", family=ANTHROPIC, base_url="https://api.anthropic.com",
                   upstream_slug="claude-haiku")  # fmt: skip
    ask = node_pb2.ResolveRouteRequest(
        org_id=org_id, model_name="sonnet", node_public_key=NodeKeyPair().public_key, node_id="n"
    )
    route = await cp.node.ResolveRoute(ask, metadata=cp.node_md)
    assert (route.openai_compatible, route.context_window, route.max_output_tokens) == (True, 200_000, 8192)
    assert route.capabilities == caps
    ask.model_name = "plain"
    plain = await cp.node.ResolveRoute(ask, metadata=cp.node_md)
    assert (plain.openai_compatible, plain.context_window, plain.max_output_tokens) == (False, 0, 0)
    assert plain.capabilities == models_pb2.ModelCapabilities()
    listed = await cp.node.ListRoutes(node_pb2.ListRoutesRequest(org_id=org_id), metadata=cp.node_md)
    by_name = {r.model_name: r for r in listed.routes}
    assert (by_name["sonnet"].openai_compatible, by_name["sonnet"].context_window) == (True, 200_000)
    assert by_name["sonnet"].capabilities == caps
    assert by_name["plain"].openai_compatible is False and by_name["plain"].context_window == 0


async def test_a_registry_change_is_announced_and_a_no_op_is_not(cp: AdminEnv) -> None:
    watch = cp.node.Watch(node_pb2.WatchRequest(after_revision=0, node_id="t"), metadata=cp.node_md)
    org_id, _ = await _claude(cp)
    await _update(cp, org_id, ["openai_compatible"], openai_compatible=True)
    await _update(cp, org_id, ["openai_compatible"], openai_compatible=True)  # no change: no announcement
    await _update(cp, org_id, ["capabilities"], capabilities=models_pb2.ModelCapabilities(tools=True))
    await _update(cp, org_id, ["capabilities"], capabilities=models_pb2.ModelCapabilities(tools=True))
    await cp.model(org_id, "marker", "claude", family=ANTHROPIC, base_url="https://api.anthropic.com",
                   upstream_slug="m")  # fmt: skip  # announced after everything above
    seen: list[str] = []
    async for event in watch:
        if event.HasField("invalidation"):
            assert event.invalidation.kind == node_pb2.INVALIDATION_KIND_MODEL
            seen.append(event.invalidation.model_name)
        if seen and seen[-1] == "marker":
            break
    watch.cancel()
    assert seen == ["sonnet"] * 3 + ["marker"], seen  # created, two changes, no no-op
