"""Priorities (a lower one only when the better ones failed) and fallback models (when every
deployment failed, another model answers, and the answer says which)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.system.e2e.routing.conftest import FAST_COOLDOWN_S, MakeUpstream
from tests.system.e2e.routing.stack import Dep, Usage, World, assert_records_match, chat, sdk, steady


async def test_lower_priority_only_while_the_better_one_fails(gateway: str, world: World, upstream: MakeUpstream,
                                                             usage: Usage) -> None:
    main, spare = await upstream("main"), await upstream("spare")
    await world.model("prio", [Dep(spare, priority=1, weight=100), Dep(main, priority=0, weight=1)])
    async with sdk(gateway, world.key) as client:
        healthy = [await chat(client, "prio") for _ in range(10)]
        spare_while_healthy = spare.count()
        await main.switch("error", status=503)
        failing = [await chat(client, "prio") for _ in range(10)]
        await main.switch("healthy")
        back = time.monotonic()
        recovered = await steady(client, "prio", FAST_COOLDOWN_S + 2.0, pause=0.02,
                                 until=lambda: main.count(since=back) >= 15)
    assert [r.deployment for r in healthy] == ["main"] * 10 and spare_while_healthy == 0
    assert [(r.status, r.deployment) for r in failing] == [(200, "spare")] * 10
    assert main.count("error") <= 3 + 1  # the breaker opened; at most one probe in the meantime
    assert {r.status for r in recovered} == {200}
    assert [r.deployment for r in recovered[-5:]] == ["main"] * 5  # all of it again once back
    assert_records_match(healthy + failing + recovered,
                         await usage.wait(world.org_id, len(healthy + failing + recovered)))


FAILURES: list[Any] = [pytest.param("error", 500, id="500"), pytest.param("rate_limited", 429, id="429"),
                       pytest.param("refused", None, id="refused")]


@pytest.mark.parametrize(("mode", "status"), FAILURES)
async def test_fallback_model_answers_when_every_deployment_failed(gateway: str, world: World,
                                                                   upstream: MakeUpstream, usage: Usage,
                                                                   mode: Any, status: int | None) -> None:
    a1, a2, b = await upstream("a1"), await upstream("a2"), await upstream("b")
    await world.model("model-b", [Dep(b)])
    await world.model("model-a", [Dep(a1), Dep(a2)], fallbacks=["model-b"])
    for up in (a1, a2):
        await up.switch(mode, status=status)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "model-a")
    assert reply.status == 200, reply.body
    assert (reply.model, reply.deployment, reply.attempts) == ("model-b", "b", 3)
    expected = 0 if mode == "refused" else 1
    assert (a1.count(), a2.count(), b.count()) == (expected, expected, 1)
    assert b.hits[0].model == "b-slug"
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.model_name, rec.requested_model, rec.deployment, rec.upstream_attempts) == (
        "model-b", "model-a", "b", 3)


async def test_no_model_header_when_the_model_itself_answered(gateway: str, world: World,
                                                              upstream: MakeUpstream, usage: Usage) -> None:
    a, b = await upstream("a"), await upstream("b")
    await world.model("model-b", [Dep(b)])
    await world.model("model-a", [Dep(a)], fallbacks=["model-b"])
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "model-a")
    assert reply.status == 200 and reply.model is None and reply.deployment == "a"
    assert b.count() == 0
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.model_name, rec.requested_model) == ("model-a", "")
