"""Streams are relayed as they arrive, and a client that leaves cancels the upstream request."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator
from typing import Any

import httpx
import pytest

from tests.fakes.provider import FakeProvider, RecordedRequest
from tests.support.provision import Provisioned
from tests.system.e2e.clients import anthropic_client, gemini_client, openai_client, vllm_client

MSGS: Any = [{"role": "user", "content": "stream please"}]


async def _open(kind: str, gateway: str, key: str) -> AsyncGenerator[Any]:
    """An SDK stream of ``kind`` (its async iterator; the client lives as long as it)."""
    if kind == "openai-chat":
        async with openai_client(gateway, key) as oc:
            async for c in await oc.chat.completions.create(model="gpt-chat", messages=MSGS, stream=True):
                yield c
    elif kind == "openai-responses":
        async with openai_client(gateway, key) as oc:
            async for e in await oc.responses.create(model="gpt-chat", input="x", stream=True):
                yield e
    elif kind == "openai-completions":
        async with openai_client(gateway, key) as oc:
            async for comp in await oc.completions.create(model="gpt-chat", prompt="x", stream=True):
                yield comp
    elif kind == "vllm-chat":
        async with vllm_client(gateway, key) as vc:
            async for c in await vc.chat.completions.create(model="llama", messages=MSGS, stream=True):
                yield c
    elif kind == "anthropic":
        async with anthropic_client(gateway, key) as ac:
            async for ev in await ac.messages.create(model="claude", max_tokens=32, messages=MSGS, stream=True):
                yield ev
    else:
        client = gemini_client(gateway, key)
        async for part in await client.aio.models.generate_content_stream(model="gemini-flash", contents="x"):
            yield part


KINDS = ["openai-chat", "openai-responses", "openai-completions", "vllm-chat", "anthropic", "gemini"]


async def _upstream(fake: FakeProvider) -> RecordedRequest:
    return (await fake.wait_for_requests(1))[0]


@pytest.mark.parametrize("kind", KINDS)
async def test_first_chunk_arrives_before_upstream_finishes(gateway: str, org: Provisioned, fake: FakeProvider,
                                                            kind: str) -> None:
    release = asyncio.Event()
    fake.knobs.hold_last = release  # the fake cannot finish until the client has seen a chunk
    stream = _open(kind, gateway, org.key)
    try:
        first = await asyncio.wait_for(anext(stream), 10)
        rec = await _upstream(fake)
        assert first is not None and not rec.complete
        release.set()
        rest = [item async for item in stream]
    finally:
        release.set()
        await stream.aclose()
    assert rest and rec.complete


@pytest.mark.parametrize("kind", ["openai-chat", "anthropic", "gemini"])
async def test_client_disconnect_cancels_upstream(gateway: str, org: Provisioned, fake: FakeProvider,
                                                  kind: str) -> None:
    hold = asyncio.Event()
    fake.knobs.hold_last = hold  # never released: the stream only ends by the client leaving
    stream = _open(kind, gateway, org.key)
    await asyncio.wait_for(anext(stream), 10)
    rec = await _upstream(fake)
    await stream.aclose()
    await asyncio.wait_for(rec.finished.wait(), 2.0)
    assert rec.disconnected and not rec.complete


async def test_slow_chunks_are_relayed_one_by_one(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    fake.knobs.chunks, fake.knobs.chunk_delay = 4, 0.15
    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    async with httpx.AsyncClient(timeout=20) as http, http.stream(
            "POST", f"{gateway}/v1/messages", headers={"x-api-key": org.key, "anthropic-version": "2023-06-01"},
            json={"model": "claude", "max_tokens": 8, "messages": MSGS, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        async for line in resp.aiter_lines():
            if line.startswith("event: content_block_delta"):
                arrivals.append(loop.time())
    assert len(arrivals) == 4
    # Each piece arrived on its own, roughly one delay apart, not all at once at the end.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.07, gaps
