"""The official SDKs' everyday surface against the gateway: helpers, raw responses, listings.

Sync clients run in a thread (the fake provider lives on this event loop).
"""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import openai
import pytest
from google.genai import errors as genai_errors

from odock.v1 import common_pb2
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.e2e.clients import anthropic_client, gemini_client, openai_client, vllm_client

MSGS: Any = [{"role": "user", "content": "hi"}]
TEXT = "piece0 piece1 piece2 "


def _sync_openai(gateway: str, key: str, suffix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=gateway + suffix, max_retries=0, timeout=20)


async def test_openai_sync_stream_helpers_and_raw_headers(gateway: str, org: Provisioned) -> None:
    def run() -> tuple[Any, ...]:
        with _sync_openai(gateway, org.key) as client:
            raw = client.chat.completions.with_raw_response.create(model="gpt-chat", messages=MSGS)
            with client.chat.completions.stream(model="gpt-chat", messages=MSGS) as stream:
                deltas = [e.delta for e in stream if e.type == "content.delta"]
                final = stream.get_final_completion()
            with client.responses.stream(model="gpt-chat", input="x") as rstream:
                kinds = [e.type for e in rstream]
                response = rstream.get_final_response()
            return raw, deltas, final, kinds, response

    raw, deltas, final, kinds, response = await asyncio.to_thread(run)
    assert raw.headers["x-request-id"].startswith("req_") and raw.parse().choices[0].message.content == TEXT
    assert "".join(deltas) == TEXT and final.choices[0].message.content == TEXT
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert response.output_text == TEXT


async def test_openai_usage_chunk_only_when_asked(gateway: str, org: Provisioned) -> None:
    async with openai_client(gateway, org.key) as client:
        plain = [
            c
            async for c in await client.chat.completions.create(model="gpt-chat", messages=MSGS, stream=True)
        ]
        asked = [
            c
            async for c in await client.chat.completions.create(
                model="gpt-chat", messages=MSGS, stream=True, stream_options={"include_usage": True}
            )
        ]
    assert all(c.usage is None for c in plain) and all(c.choices for c in plain)
    assert asked[-1].usage is not None and asked[-1].usage.completion_tokens == 3 and not asked[-1].choices


async def test_openai_models_list_and_retrieve(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        names = sorted([m.id async for m in client.models.list()])
        one = await client.models.retrieve("claude")
        with pytest.raises(openai.NotFoundError) as caught:
            await client.models.retrieve("no-such-model")
    assert names == sorted(n for n, m in org.models.items() if m.family == common_pb2.PROVIDER_FAMILY_OPENAI)  # none opted in
    assert one.id == "claude" and one.object == "model" and one.owned_by == "anthropic"
    assert caught.value.code == "model_not_found"
    async with vllm_client(gateway, org.key) as vllm:
        assert sorted([m.id async for m in vllm.models.list()]) == ["bge", "llama", "whisper"]
    assert fake.requests == []  # listings are answered by the gateway


async def test_openai_embeddings_both_encodings(gateway: str, org: Provisioned) -> None:
    async with openai_client(gateway, org.key) as client:
        as_float = await client.embeddings.create(model="text-embed", input="x", encoding_format="float")
        default = await client.embeddings.create(model="text-embed", input="x")  # SDK asks base64, decodes
    assert len(as_float.data[0].embedding) == len(default.data[0].embedding) > 0


async def test_anthropic_stream_helper_and_bearer_auth(gateway: str, org: Provisioned) -> None:
    def run() -> tuple[str, Any, str]:
        client = anthropic.Anthropic(api_key=org.key, base_url=gateway, max_retries=0, timeout=20)
        with client, client.messages.stream(model="claude", max_tokens=16, messages=MSGS) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        with anthropic.Anthropic(auth_token=org.key, base_url=gateway, max_retries=0, timeout=20) as bearer:
            other = bearer.messages.create(model="claude", max_tokens=16, messages=MSGS)
        block = other.content[0]
        assert isinstance(block, anthropic.types.TextBlock)
        return text, final, block.text

    text, final, bearer_text = await asyncio.to_thread(run)
    assert text == TEXT == bearer_text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3


async def test_anthropic_unsupported_endpoints_are_not_found_errors(gateway: str, org: Provisioned) -> None:
    async with anthropic_client(gateway, org.key) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.count_tokens(model="claude", messages=MSGS)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "Unknown endpoint", "code": "not_found"},
    }


async def test_genai_sync_and_async_streams(gateway: str, org: Provisioned) -> None:
    client = gemini_client(gateway, org.key)
    parts = [
        p.text
        async for p in await client.aio.models.generate_content_stream(model="gemini-flash", contents="x")
    ]
    sync_parts = await asyncio.to_thread(
        lambda: [
            p.text for p in client.models.generate_content_stream(model="models/gemini-flash", contents="x")
        ]
    )
    assert "".join(p or "" for p in parts) == TEXT == "".join(p or "" for p in sync_parts)
    answer = await client.aio.models.generate_content(model="gemini-flash", contents="x")
    assert answer.usage_metadata is not None and answer.usage_metadata.candidates_token_count == 3


@pytest.mark.parametrize("method", ["count_tokens", "embed_content"])
async def test_genai_unsupported_methods_are_client_errors(
    gateway: str, org: Provisioned, method: str
) -> None:
    client = gemini_client(gateway, org.key)
    with pytest.raises(genai_errors.ClientError) as caught:
        await getattr(client.aio.models, method)(model="gemini-flash", contents="x")
    assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
