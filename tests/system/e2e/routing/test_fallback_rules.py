"""Fallback models: tried in order, only those the key may use, their own fallbacks not followed,
of another family when the endpoint can serve it (an Anthropic model for an OpenAI client), streamed."""

from __future__ import annotations

from odock.v1 import common_pb2
from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import MESSAGES, Dep, Usage, World, chat, sdk

C_PRICING = common_pb2.Pricing(input_per_mtok_micros=7_000_003, output_per_mtok_micros=11_000_007)


async def test_fallbacks_in_order(gateway: str, world: World, upstream: MakeUpstream, usage: Usage) -> None:
    a, b, c = await upstream("a"), await upstream("b"), await upstream("c")
    await world.model("fb-c", [Dep(c)], pricing=C_PRICING)
    await world.model("fb-b", [Dep(b)])
    await world.model("fb-a", [Dep(a)], fallbacks=["fb-b", "fb-c"])
    await a.switch("error", status=502)
    await b.switch("error", status=504)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "fb-a")
    assert (reply.status, reply.model, reply.deployment, reply.attempts) == (200, "fb-c", "c", 3)
    assert (a.count(), b.count(), c.count()) == (1, 1, 1)
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.model_name, rec.requested_model, rec.upstream_slug) == ("fb-c", "fb-a", "c-slug")
    assert rec.output_tokens == 3  # priced as the model that answered
    assert rec.cost_picos == (rec.input_tokens * C_PRICING.input_per_mtok_micros
                              + rec.output_tokens * C_PRICING.output_per_mtok_micros)


async def test_a_disabled_fallback_is_skipped(gateway: str, world: World, upstream: MakeUpstream) -> None:
    a, b, c = await upstream("a"), await upstream("b"), await upstream("c")
    await world.model("fb-c", [Dep(c)])
    await world.model("fb-b", [Dep(b)], enabled=False)
    await world.model("fb-a", [Dep(a)], fallbacks=["fb-b", "fb-c"])
    await a.switch("error", status=500)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "fb-a")
    assert (reply.status, reply.model, reply.attempts) == (200, "fb-c", 2)
    assert b.count() == 0


async def test_a_fallback_the_key_may_not_use_is_skipped(gateway: str, world: World,
                                                         upstream: MakeUpstream) -> None:
    a, b = await upstream("a"), await upstream("b")
    await world.model("fb-b", [Dep(b)])
    await world.model("fb-a", [Dep(a)], fallbacks=["fb-b"])
    await a.switch("error", status=503)
    _, only_a = await world.admin.create_key(world.org_id, models=["fb-a"])
    async with sdk(gateway, only_a) as client:
        reply = await chat(client, "fb-a")
    assert reply.status == 503 and reply.error()["message"] == "fake a: upstream error 503"
    assert reply.model is None and b.count() == 0


async def test_a_fallbacks_own_fallbacks_are_not_followed(gateway: str, world: World,
                                                          upstream: MakeUpstream) -> None:
    a, b, c = await upstream("a"), await upstream("b"), await upstream("c")
    await world.model("fb-c", [Dep(c)])
    await world.model("fb-b", [Dep(b)], fallbacks=["fb-c"])
    await world.model("fb-a", [Dep(a)], fallbacks=["fb-b"])
    await a.switch("error", status=500)
    await b.switch("error", status=529)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "fb-a")
    assert reply.status == 529 and reply.error()["message"] == "fake b: upstream error 529"
    assert reply.attempts == 2 and c.count() == 0


async def test_streamed_answer_from_a_fallback(gateway: str, world: World, upstream: MakeUpstream) -> None:
    a, b = await upstream("a"), await upstream("b")
    await world.model("fb-b", [Dep(b)])
    await world.model("fb-a", [Dep(a)], fallbacks=["fb-b"])
    await a.switch("rate_limited", retry_after=1)
    async with sdk(gateway, world.key) as client:
        raw = await client.chat.completions.with_raw_response.create(model="fb-a", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in raw.parse()]
    assert "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices) == "piece0 piece1 piece2 "
    assert raw.headers["x-odock-model"] == "fb-b" and raw.headers["x-odock-deployment"] == "b"
    assert b.hits[0].stream and b.hits[0].model == "b-slug"


async def test_fallback_to_an_anthropic_model_for_an_openai_client(gateway: str, world: World,
                                                                   upstream: MakeUpstream, usage: Usage) -> None:
    gpt, claude = await upstream("gpt"), await upstream("claude", "anthropic")
    await world.model("fb-claude", [Dep(claude)], openai_compatible=True)
    await world.model("fb-gpt", [Dep(gpt)], fallbacks=["fb-claude"])
    await gpt.switch("error", status=500)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "fb-gpt")
    assert reply.status == 200, reply.body
    assert reply.body["object"] == "chat.completion" and reply.body["choices"][0]["message"]["content"]
    assert (reply.model, reply.deployment, reply.attempts) == ("fb-claude", "claude", 2)
    assert claude.hits[0].model == "claude-slug"
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.model_name, rec.requested_model, rec.deployment) == ("fb-claude", "fb-gpt", "claude")
