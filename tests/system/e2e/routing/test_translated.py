"""Routing on an Anthropic model: natively (/v1/messages) and translated for OpenAI clients
(/v1/chat/completions, the model opted in), a 529 'overloaded' deployment is failed over."""

from __future__ import annotations

import asyncio
import time

import anthropic

from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import MESSAGES, Dep, Usage, World, chat, sdk


async def test_translated_request_fails_over_between_anthropic_deployments(
        gateway: str, world: World, upstream: MakeUpstream, usage: Usage) -> None:
    busy, free = await upstream("busy", "anthropic"), await upstream("free", "anthropic")
    await world.model("claude-multi", [Dep(busy, priority=0), Dep(free, priority=1)], openai_compatible=True)
    await busy.switch("error", status=529)
    async with sdk(gateway, world.key) as client:
        plain = await chat(client, "claude-multi")
    assert plain.status == 200, plain.body
    assert (plain.deployment, plain.attempts) == ("free", 2)
    assert plain.body["choices"][0]["message"]["content"]
    assert (busy.count(), free.count()) == (1, 1) and free.hits[0].model == "free-slug"
    rec = (await usage.wait(world.org_id, 1))[plain.request_id]
    assert (rec.deployment, rec.upstream_attempts) == ("free", 2)


async def test_translated_stream_fails_over_between_anthropic_deployments(
        gateway: str, world: World, upstream: MakeUpstream, usage: Usage) -> None:
    busy, free = await upstream("busy", "anthropic"), await upstream("free", "anthropic")
    await world.model("claude-multi", [Dep(busy, priority=0), Dep(free, priority=1)], openai_compatible=True)
    await busy.switch("error", status=529)
    async with sdk(gateway, world.key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="claude-multi", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in raw.parse()]
    assert raw.headers["x-odock-deployment"] == "free" and raw.headers["x-odock-attempts"] == "2"
    assert "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert (busy.count(), free.count()) == (1, 1) and free.hits[0].stream
    rec = (await usage.wait(world.org_id, 1))[raw.headers["x-odock-request-id"]]
    assert (rec.deployment, rec.upstream_attempts) == ("free", 2)


async def test_native_messages_fail_over_on_overloaded(gateway: str, world: World, upstream: MakeUpstream,
                                                       usage: Usage) -> None:
    busy, free = await upstream("busy", "anthropic"), await upstream("free", "anthropic")
    await world.model("claude-native", [Dep(busy, priority=0), Dep(free, priority=1)])
    await busy.switch("error", status=529)
    async with anthropic.AsyncAnthropic(api_key=world.key, base_url=gateway, max_retries=0, timeout=20) as client:
        raw = await client.messages.with_raw_response.create(model="claude-native", max_tokens=64,
                                                             messages=MESSAGES)
        message = await raw.parse()
    assert message.content and raw.headers["x-odock-deployment"] == "free"
    assert raw.headers["x-odock-attempts"] == "2"
    assert (busy.count(), free.count()) == (1, 1)
    rec = (await usage.wait(world.org_id, 1))[raw.headers["x-odock-request-id"]]
    assert (rec.deployment, rec.upstream_attempts, rec.model_name) == ("free", 2, "claude-native")


async def test_anthropic_reset_header_takes_the_deployment_out(gateway: str, world: World,
                                                               upstream: MakeUpstream) -> None:
    limited, other = await upstream("limited", "anthropic"), await upstream("other", "anthropic")
    await world.model("claude-reset", [Dep(limited), Dep(other)])
    await limited.switch("rate_limited", retry_after=2, style="anthropic", times=1)
    statuses: list[int] = []
    deadline = time.monotonic() + 5.0
    async with anthropic.AsyncAnthropic(api_key=world.key, base_url=gateway, max_retries=0, timeout=20) as client:
        while time.monotonic() < deadline and limited.count() < 2:
            raw = await client.messages.with_raw_response.create(model="claude-reset", max_tokens=16,
                                                                 messages=MESSAGES)
            statuses.append(raw.status_code)
            await asyncio.sleep(0.03)
    assert set(statuses) == {200}
    told_at = limited.hits[0].ended
    assert limited.hits[0].status == 429 and told_at is not None
    assert len(limited.hits) == 2, "never chosen again"
    # A whole-second reset time 2 s after the next whole second: 2 to 3 s away.
    assert 1.7 <= limited.hits[1].at - told_at <= 4.5, limited.hits[1].at - told_at
