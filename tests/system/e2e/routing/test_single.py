"""A model with one deployment, made the old way (top-level fields), behaves exactly as before."""

from __future__ import annotations

from tests.support.provision import Provisioner
from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import Usage, World, chat, sdk


async def test_one_deployment_relays_every_answer_once(gateway: str, world: World, admin: Provisioner,
                                                       upstream: MakeUpstream, usage: Usage) -> None:
    up = await upstream("solo")
    model = await admin.create_model(world.org_id, "solo-model", "openai", up.slug, up.base_url,
                                     await world.credential(up), timeout_s=5)
    assert [(d.name, d.base_url, d.upstream_slug) for d in model.deployments] == [("default", up.base_url, up.slug)]
    assert list(model.fallbacks) == []
    async with sdk(gateway, world.key) as client:
        ok = await chat(client, "solo-model")
        await up.switch("error", status=500)
        # Today every request reaches the one upstream and gets its answer: no breaker turns a
        # failing single deployment into the gateway's own 503.
        failed = [await chat(client, "solo-model") for _ in range(5)]
        await up.switch("healthy")
        again = await chat(client, "solo-model")
    assert ok.status == 200 and ok.body["choices"][0]["message"]["content"] == "piece0 piece1 piece2 "
    assert [r.status for r in failed] == [500] * 5
    assert {r.error()["message"] for r in failed} == {"fake solo: upstream error 500"}
    assert again.status == 200
    assert up.count() == 7 and up.count("error") == 5
    records = await usage.wait(world.org_id, 7)
    for reply in (ok, *failed, again):
        rec = records[reply.request_id]
        assert (rec.deployment, rec.upstream_attempts, rec.requested_model) == ("default", 1, "")
        assert rec.model_name == "solo-model" and rec.http_status == reply.status
