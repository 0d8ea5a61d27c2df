"""Health is per node (no shared store on the request path), and a model's deployments change on
every node through the control plane's watch."""

from __future__ import annotations

import time

from google.protobuf import field_mask_pb2

from odock.v1 import models_pb2
from tests.support.dataplane import DataPlaneProcess
from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import Dep, World, chat, sdk


async def test_a_retry_after_seen_by_one_node_does_not_bind_another(gateway: str, dp_default: DataPlaneProcess,
                                                                    world: World, upstream: MakeUpstream) -> None:
    limited, other = await upstream("limited"), await upstream("other")
    await world.model("nodes", [Dep(limited), Dep(other)])
    await limited.switch("rate_limited", retry_after=5, times=1)
    async with sdk(gateway, world.key) as first_node, sdk(dp_default.url, world.key) as second_node:
        for _ in range(4):
            if limited.count():
                break
            assert (await chat(first_node, "nodes")).status == 200
        assert limited.count() == 1  # the 429, on the first node
        elsewhere = [await chat(second_node, "nodes") for _ in range(4)]
        here = [await chat(first_node, "nodes") for _ in range(4)]
    assert {r.status for r in elsewhere + here} == {200}
    assert [r.deployment for r in elsewhere].count("limited") == 2  # its equal share there
    assert {r.deployment for r in here} == {"other"}  # still out of choice here


async def test_changed_deployments_reach_the_node_through_the_watch(gateway: str, world: World,
                                                                    upstream: MakeUpstream) -> None:
    old, new = await upstream("old"), await upstream("new")
    model = await world.model("moving", [Dep(old)])
    async with sdk(gateway, world.key) as client:
        assert (await chat(client, "moving")).deployment == "old"
        replacement = models_pb2.Deployment(name=new.name, base_url=new.base_url,
                                            credential=await world.credential(new), upstream_slug=new.slug)
        model.ClearField("deployments")
        model.deployments.append(replacement)
        await world.admin.models.UpdateModel(
            models_pb2.UpdateModelRequest(model=model, update_mask=field_mask_pb2.FieldMask(paths=["deployments"])),
            metadata=world.admin.metadata)
        changed = time.monotonic()
        while True:
            reply = await chat(client, "moving")
            assert reply.status == 200
            if reply.deployment == "new":
                break
            assert time.monotonic() - changed < 3.0, "the node still routes to the old deployment"
        settled = old.count()
        after = [await chat(client, "moving") for _ in range(5)]
    assert [(r.deployment, r.attempts) for r in after] == [("new", 1)] * 5
    assert old.count() == settled and {h.model for h in new.hits} == {"new-slug"}
