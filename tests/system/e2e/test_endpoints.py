"""Every native endpoint through the official SDKs (httpx where no SDK method exists), streamed and not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.e2e.checks import TEXT, assert_forwarded
from tests.system.e2e.clients import anthropic_client, gemini_client, openai_client, vllm_client

MSGS: Any = [{"role": "user", "content": "Write a short status update."}]
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(64))
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


async def test_openai_chat(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        out = await client.chat.completions.create(model="gpt-chat", messages=MSGS, temperature=0.3)
        assert out.choices[0].message.content == TEXT and out.model == org.slug("gpt-chat")
        rec = assert_forwarded(fake, org, family="openai", path="/v1/chat/completions", model="gpt-chat")
        assert out.usage is not None and out.usage.prompt_tokens == rec.prompt_tokens
        fake.reset()
        stream = await client.chat.completions.create(model="gpt-chat", messages=MSGS, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert assert_forwarded(fake, org, family="openai", path="/v1/chat/completions", model="gpt-chat").complete


async def test_openai_responses(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        out = await client.responses.create(model="gpt-chat", input="Summarize the gateway flow.")
        assert out.output_text == TEXT
        assert_forwarded(fake, org, family="openai", path="/v1/responses", model="gpt-chat")
        fake.reset()
        events = [e async for e in await client.responses.create(model="gpt-chat", input="x", stream=True)]
    assert [events[0].type, events[-1].type] == ["response.created", "response.completed"]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT
    assert_forwarded(fake, org, family="openai", path="/v1/responses", model="gpt-chat")


async def test_openai_completions(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        out = await client.completions.create(model="gpt-chat", prompt="Say hi")
        assert out.choices[0].text == TEXT
        assert_forwarded(fake, org, family="openai", path="/v1/completions", model="gpt-chat")
        fake.reset()
        chunks = [c async for c in await client.completions.create(model="gpt-chat", prompt="Say hi", stream=True)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == TEXT
    assert_forwarded(fake, org, family="openai", path="/v1/completions", model="gpt-chat")


async def test_openai_embeddings(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        out = await client.embeddings.create(model="text-embed", input=["a", "b"], encoding_format="float")
    assert [len(d.embedding) for d in out.data] == [8, 8]
    assert_forwarded(fake, org, family="openai", path="/v1/embeddings", model="text-embed")


# The SDK marks images.create_variation deprecated; the endpoint is still in the product's table.
@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_openai_images(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        gen = await client.images.generate(model="image-gen", prompt="a lighthouse", n=2)
        assert gen.data is not None and len(gen.data) == 2
        assert_forwarded(fake, org, family="openai", path="/v1/images/generations", model="image-gen")
        fake.reset()
        edit = await client.images.edit(model="image-gen", prompt="add a hat", image=("in.png", PNG, "image/png"))
        assert edit.data is not None
        rec = assert_forwarded(fake, org, family="openai", path="/v1/images/edits", model="image-gen")
        image = multipart.field(rec.form(), "image")
        assert image is not None and image.data == PNG and image.filename == "in.png"
        fake.reset()
        # No model: the org's default model for this endpoint is used.
        var = await client.images.create_variation(image=("v.png", PNG, "image/png"), n=1)
        assert var.data is not None
    rec = assert_forwarded(fake, org, family="openai", path="/v1/images/variations", model="image-gen")
    image = multipart.field(rec.form(), "image")
    assert image is not None and image.data == PNG


async def test_openai_models_listing(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with openai_client(gateway, org.key) as client:
        ids = {m.id async for m in client.models.list()}
        one = await client.models.retrieve("gpt-chat")
    assert {"gpt-chat", "text-embed", "image-gen"} <= ids
    assert one.id == "gpt-chat" and one.object == "model"


async def test_anthropic_messages(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with anthropic_client(gateway, org.key) as client:
        msg = await client.messages.create(model="claude", max_tokens=160, messages=MSGS)
        assert msg.content[0].type == "text" and msg.content[0].text == TEXT
        rec = assert_forwarded(fake, org, family="anthropic", path="/v1/messages", model="claude")
        assert msg.usage.input_tokens == rec.prompt_tokens
        fake.reset()
        async with client.messages.stream(model="claude", max_tokens=160, messages=MSGS) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == TEXT and final.usage.output_tokens == 3
    assert_forwarded(fake, org, family="anthropic", path="/v1/messages", model="claude")


async def test_gemini_generate(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    client = gemini_client(gateway, org.key)
    slug = org.slug("gemini-flash")
    out = await client.aio.models.generate_content(model="gemini-flash", contents="Hello from Gemini")
    assert out.text == TEXT and out.usage_metadata is not None
    assert out.usage_metadata.candidates_token_count == 3
    assert_forwarded(fake, org, family="gemini", path=f"/v1beta/models/{slug}:generateContent", model="gemini-flash")
    fake.reset()
    parts = [c async for c in await client.aio.models.generate_content_stream(model="gemini-flash", contents="x")]
    assert "".join(p.text or "" for p in parts) == TEXT
    rec = assert_forwarded(fake, org, family="gemini", path=f"/v1beta/models/{slug}:streamGenerateContent",
                           model="gemini-flash")
    assert rec.query == {"alt": "sse"}


async def test_gemini_stream_without_alt_is_a_json_array(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1beta/models/gemini-flash:streamGenerateContent",
                               headers={"x-goog-api-key": org.key},
                               json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    assert resp.status_code == 200
    assert "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in resp.json()) == TEXT
    rec = assert_forwarded(fake, org, family="gemini", model="gemini-flash",
                           path=f"/v1beta/models/{org.slug('gemini-flash')}:streamGenerateContent")
    assert rec.query == {}


async def test_vllm_openai_compatible_routes(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with vllm_client(gateway, org.key) as client:
        chat = await client.chat.completions.create(model="llama", messages=MSGS, max_tokens=160)
        assert chat.choices[0].message.content == TEXT
        assert_forwarded(fake, org, family="vllm", path="/v1/chat/completions", model="llama")
        fake.reset()
        stream = await client.chat.completions.create(model="llama", messages=MSGS, stream=True)
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == TEXT
        assert_forwarded(fake, org, family="vllm", path="/v1/chat/completions", model="llama")
        fake.reset()
        comp = await client.completions.create(model="llama", prompt="hi")
        assert comp.choices[0].text == TEXT
        fake.reset()
        streamed = await client.completions.create(model="llama", prompt="hi", stream=True)
        assert "".join([c.choices[0].text async for c in streamed if c.choices]) == TEXT
        assert_forwarded(fake, org, family="vllm", path="/v1/completions", model="llama")
        fake.reset()
        resp = await client.responses.create(model="llama", input="hi")
        assert resp.output_text == TEXT
        fake.reset()
        events = [e async for e in await client.responses.create(model="llama", input="hi", stream=True)]
        assert events[-1].type == "response.completed"
        assert_forwarded(fake, org, family="vllm", path="/v1/responses", model="llama")
        fake.reset()
        emb = await client.embeddings.create(model="bge", input="Embeddings traffic is governed by Odock.")
        assert len(emb.data[0].embedding) == 8
        assert_forwarded(fake, org, family="vllm", path="/v1/embeddings", model="bge")
        ids = {m.id async for m in client.models.list()}
        assert {"llama", "bge", "whisper"} <= ids


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # audio.translations is deprecated
@pytest.mark.parametrize("kind", ["transcriptions", "translations"])
async def test_vllm_audio(gateway: str, org: Provisioned, fake: FakeProvider, kind: str) -> None:
    async with vllm_client(gateway, org.key) as client:
        api = client.audio.transcriptions if kind == "transcriptions" else client.audio.translations
        out = await api.create(model="whisper", file=("speech.wav", WAV, "audio/wav"))
    assert out.text == f"{TEXT}({len(WAV)} bytes)"
    rec = assert_forwarded(fake, org, family="vllm", path=f"/v1/audio/{kind}", model="whisper")
    part = multipart.field(rec.form(), "file")
    assert part is not None and part.data == WAV and part.filename == "speech.wav"


@pytest.mark.parametrize(("route", "payload", "check"), [
    ("tokenize", {"prompt": "Hello there"}, lambda j: j["count"] == len(j["tokens"]) > 0),
    ("detokenize", {"tokens": [7, 8]}, lambda j: j == {"prompt": "t7 t8"}),
    ("pooling", {"input": ["a", "b"]}, lambda j: [d["object"] for d in j["data"]] == ["pooling", "pooling"]),
    ("classify", {"input": "great"}, lambda j: j["data"][0]["label"] == "positive"),
    ("score", {"text_1": "q", "text_2": ["a", "b", "c"]}, lambda j: len(j["data"]) == 3),
    ("rerank", {"query": "q", "documents": ["a", "b", "c"], "top_n": 2}, lambda j: len(j["results"]) == 2),
])
async def test_vllm_native_routes(gateway: str, org: Provisioned, fake: FakeProvider, route: str,
                                  payload: dict[str, object], check: object) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1/vllm/{route}", json={"model": "bge", **payload},
                               headers={"Authorization": f"Bearer {org.key}"})
    assert resp.status_code == 200, resp.text
    assert callable(check) and check(resp.json())
    rec = assert_forwarded(fake, org, family="vllm", path=f"/{route}", model="bge")
    assert {k: v for k, v in rec.json().items() if k != "model"} == payload
