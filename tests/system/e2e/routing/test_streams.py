"""Streams: a retry before the first byte is invisible; after it, never (the client sees the break)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import MESSAGES, Dep, Usage, World, post, sdk


async def test_no_retry_once_the_stream_started(gateway: str, world: World, upstream: MakeUpstream,
                                                usage: Usage) -> None:
    first, second = await upstream("first"), await upstream("second")
    await world.model("st", [Dep(first, priority=0), Dep(second, priority=1)])
    await first.switch("reset_after_first_chunk")
    texts: list[str] = []
    async with sdk(gateway, world.key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="st", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        with pytest.raises(openai.APIError):
            async for chunk in raw.parse():
                texts.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(texts) == "piece0 "  # what the first one sent, once, and nothing from another
    assert raw.headers["x-odock-deployment"] == "first" and raw.headers["x-odock-attempts"] == "1"
    assert first.count() == 1 and second.count() == 0
    rec = (await usage.wait(world.org_id, 1))[raw.headers["x-odock-request-id"]]
    assert (rec.deployment, rec.upstream_attempts, rec.streamed) == ("first", 1, True)


@pytest.mark.parametrize("mode", ["error", "refused", "rate_limited"])
async def test_retry_before_the_first_byte_of_a_stream(gateway: str, world: World, upstream: MakeUpstream,
                                                       usage: Usage, mode: str) -> None:
    first, second = await upstream("first"), await upstream("second")
    await world.model("st", [Dep(first, priority=0), Dep(second, priority=1)])
    await first.switch(mode, status=500 if mode == "error" else None)  # type: ignore[arg-type]
    async with sdk(gateway, world.key) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="st", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    assert text == "piece0 piece1 piece2 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert raw.headers["x-odock-deployment"] == "second" and raw.headers["x-odock-attempts"] == "2"
    assert first.count() == (0 if mode == "refused" else 1) and second.count() == 1
    assert second.hits[0].stream and second.hits[0].model == "second-slug"
    rec = (await usage.wait(world.org_id, 1))[raw.headers["x-odock-request-id"]]
    assert (rec.deployment, rec.upstream_attempts, rec.http_status) == ("second", 2, 200)
    assert rec.output_tokens == 3


async def test_no_retry_once_a_plain_answer_started(gateway: str, world: World, upstream: MakeUpstream,
                                                    usage: Usage) -> None:
    first, second = await upstream("first"), await upstream("second")
    await world.model("plain", [Dep(first, priority=0), Dep(second, priority=1)])
    await first.switch("reset_after_first_chunk")  # the head and half the JSON body, then a reset
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as http:
        try:
            reply = await post(http, world.key, {"model": "plain", "messages": MESSAGES})
        except httpx.TransportError:
            status = None  # the head came, the body broke off
        else:
            status = reply.status  # the gateway's 502, had it not sent the head yet
    assert status in (None, 502)
    assert first.count() == 1 and second.count() == 0
    rec = next(iter((await usage.wait(world.org_id, 1)).values()))
    assert (rec.deployment, rec.upstream_attempts) == ("first", 1)


async def test_no_attempt_for_a_client_that_left(gateway: str, world: World, upstream: MakeUpstream,
                                                 usage: Usage) -> None:
    slow, spare = await upstream("slow"), await upstream("spare")
    await world.model("gone", [Dep(slow, priority=0, timeout_s=1.0), Dep(spare, priority=1)])
    await slow.switch("hang")
    async with sdk(gateway, world.key, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="gone", messages=MESSAGES)
    await asyncio.sleep(1.5)  # past the hanging deployment's first-byte timeout
    assert slow.count() == 1 and spare.count() == 0  # nobody is waiting for an answer any more
    rec = next(iter((await usage.wait(world.org_id, 1)).values()))
    assert (rec.deployment, rec.upstream_attempts) == ("slow", 1)


async def test_the_retried_request_is_the_same_request(gateway: str, world: World, upstream: MakeUpstream,
                                                       usage: Usage) -> None:
    first, second = await upstream("first"), await upstream("second")
    await world.model("same", [Dep(first, priority=0), Dep(second, priority=1)])
    await first.switch("error", status=503)
    async with sdk(gateway, world.key) as client:
        # No stream_options: the gateway asks for usage itself (to meter), on each attempt, and
        # keeps the usage chunk from the client.
        raw = await client.chat.completions.with_raw_response.create(
            model="same", messages=MESSAGES, stream=True, temperature=0.25, max_tokens=20, user="u-1", seed=7)
        chunks = [chunk async for chunk in raw.parse()]
    assert all(chunk.usage is None for chunk in chunks)
    tried, answered = first.hits[0].json(), second.hits[0].json()
    assert (tried.pop("model"), answered.pop("model")) == ("first-slug", "second-slug")
    assert tried == answered and answered["temperature"] == 0.25 and answered["messages"] == MESSAGES
    for hit, up in ((first.hits[0], first), (second.hits[0], second)):
        assert hit.headers["authorization"] == f"Bearer {up.secret}"  # each deployment's own credential
        assert world.key not in str(hit.headers) and world.key.encode() not in hit.body
    rec = (await usage.wait(world.org_id, 1))[raw.headers["x-odock-request-id"]]
    assert (rec.deployment, rec.upstream_attempts, rec.output_tokens) == ("second", 2, 3)
