"""The fake speaks each provider's real shapes: the official SDKs, pointed straight at it, parse them."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider, prompt_tokens_for


async def test_openai_chat_plain_and_streamed(fake_provider: FakeProvider) -> None:
    fake_provider.knobs.chunks = 4
    async with openai.AsyncOpenAI(api_key="sk-x", base_url=fake_provider.base_url("openai")) as client:
        done = await client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "hi"}])
        rec = fake_provider.last()
        assert done.model == "m1" and done.choices[0].message.content == "piece0 piece1 piece2 piece3 "
        assert done.usage is not None and done.usage.prompt_tokens == prompt_tokens_for(rec.body)
        assert done.usage.completion_tokens == 4
        assert rec.native_path == "/v1/chat/completions" and rec.headers["Authorization"] == "Bearer sk-x"
        stream = await client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "piece0 piece1 piece2 piece3 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    assert fake_provider.last().stream and fake_provider.last().complete


async def test_openai_responses_completions_embeddings_images(fake_provider: FakeProvider) -> None:
    async with openai.AsyncOpenAI(api_key="sk-x", base_url=fake_provider.base_url("openai")) as client:
        resp = await client.responses.create(model="r1", input="hello")
        assert resp.output_text == "piece0 piece1 piece2 " and resp.usage is not None
        assert resp.usage.output_tokens == 3
        events = [e async for e in await client.responses.create(model="r1", input="hello", stream=True)]
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
        deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert deltas == "piece0 piece1 piece2 "
        comp = await client.completions.create(model="c1", prompt="say")
        assert comp.choices[0].text == "piece0 piece1 piece2 "
        streamed = [c async for c in await client.completions.create(
            model="c1", prompt="say", stream=True, stream_options={"include_usage": True})]
        assert streamed[-1].usage is not None and streamed[-1].usage.completion_tokens == 3
        emb = await client.embeddings.create(model="e1", input=["a", "b"])
        assert len(emb.data) == 2 and len(emb.data[1].embedding) == 8
        emb_f = await client.embeddings.create(model="e1", input="a", encoding_format="float")
        assert emb_f.data[0].embedding == emb.data[0].embedding
        img = await client.images.generate(model="i1", prompt="cat", n=2)
        assert img.data is not None and len(img.data) == 2
        edit = await client.images.edit(model="i1", prompt="hat", image=("a.png", b"\x89PNG-bytes", "image/png"))
        assert edit.data is not None and len(edit.data) == 1
    form = fake_provider.last().form()
    image = multipart.field(form, "image")
    assert image is not None and image.data == b"\x89PNG-bytes" and image.filename == "a.png"


async def test_anthropic_messages(fake_provider: FakeProvider) -> None:
    async with anthropic.AsyncAnthropic(api_key="ak", base_url=fake_provider.base_url("anthropic")) as client:
        msg = await client.messages.create(model="claude-x", max_tokens=10,
                                           messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].type == "text" and msg.content[0].text == "piece0 piece1 piece2 "
        # anthropic 2.x sends the api key as a Bearer token (older SDKs used x-api-key)
        assert msg.usage.output_tokens == 3 and fake_provider.last().headers["Authorization"] == "Bearer ak"
        async with client.messages.stream(model="claude-x", max_tokens=10,
                                          messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == "piece0 piece1 piece2 " and final.usage.output_tokens == 3
    assert final.usage.input_tokens == prompt_tokens_for(fake_provider.last().body)


async def test_gemini_generate_and_stream(fake_provider: FakeProvider) -> None:
    client = genai.Client(api_key="gk", http_options=types.HttpOptions(
        base_url=fake_provider.base_url("gemini"), api_version="v1beta"))
    out = await client.aio.models.generate_content(model="gemini-x", contents="hi")
    assert out.text == "piece0 piece1 piece2 " and out.usage_metadata is not None
    assert out.usage_metadata.candidates_token_count == 3
    rec = fake_provider.last()
    assert rec.native_path == "/v1beta/models/gemini-x:generateContent" and rec.headers["x-goog-api-key"] == "gk"
    parts = [c async for c in await client.aio.models.generate_content_stream(model="gemini-x", contents="hi")]
    assert "".join(p.text or "" for p in parts) == "piece0 piece1 piece2 "
    assert fake_provider.last().query.get("alt") == "sse"
    async with httpx.AsyncClient() as http:
        arr = await http.post(fake_provider.base_url("gemini") + "/v1beta/models/g:streamGenerateContent",
                              json={"contents": []})
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in arr.json()] == ["piece0 ", "piece1 ", "piece2 "]


async def test_vllm_native_routes(fake_provider: FakeProvider) -> None:
    base = fake_provider.base_url("vllm")
    async with openai.AsyncOpenAI(api_key="vk", base_url=base + "/v1") as client:
        chat = await client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "x"}])
        assert chat.choices[0].message.content == "piece0 piece1 piece2 "
        tr = await client.audio.transcriptions.create(model="whisper", file=("a.wav", b"RIFF1234", "audio/wav"))
        assert tr.text.endswith("(8 bytes)")
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.post("/tokenize", json={"model": "llama", "prompt": "abc"})).json()["count"] > 0
        assert (await http.post("/detokenize", json={"model": "llama", "tokens": [1, 2]})).json() == {"prompt": "t1 t2"}
        assert (await http.post("/pooling", json={"model": "llama", "input": "a"})).json()["data"][0]["object"] == "pooling"
        assert (await http.post("/classify", json={"model": "llama", "input": ["a", "b"]})).json()["data"][1]["label"]
        assert len((await http.post("/score", json={"model": "m", "text_1": "q", "text_2": ["a", "b"]})).json()["data"]) == 2
        rr = (await http.post("/rerank", json={"model": "m", "query": "q", "documents": ["a", "b", "c"], "top_n": 2})).json()
        assert [r["index"] for r in rr["results"]] == [0, 1]
        assert (await http.get("/v1/models")).json()["data"][0]["owned_by"] == "vllm"


@pytest.mark.parametrize(("status", "exc"), [
    (401, openai.AuthenticationError), (404, openai.NotFoundError), (429, openai.RateLimitError)])
async def test_native_errors_raise_sdk_exceptions(fake_provider: FakeProvider, status: int, exc: type[Exception]) -> None:
    fake_provider.knobs.status = status
    async with openai.AsyncOpenAI(api_key="sk", base_url=fake_provider.base_url("openai"), max_retries=0) as c:
        with pytest.raises(exc, match="fake upstream error"):
            await c.chat.completions.create(model="m", messages=[])
    async with anthropic.AsyncAnthropic(api_key="ak", base_url=fake_provider.base_url("anthropic"),
                                        max_retries=0) as a:
        with pytest.raises(anthropic.APIStatusError, match="fake upstream error") as info:
            await a.messages.create(model="m", max_tokens=1, messages=[])
    assert info.value.status_code == status


async def test_knobs_reset_stall_redirect_and_disconnect(fake_provider: FakeProvider) -> None:
    url = fake_provider.base_url("openai") + "/chat/completions"
    body = {"model": "m", "messages": [], "stream": True}
    async with httpx.AsyncClient(timeout=5) as http:
        fake_provider.knobs.reset_after = 2
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.post(url, json=body)
        fake_provider.knobs = type(fake_provider.knobs)(reset_after=10)
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.post(url, json={"model": "m", "messages": []})
        fake_provider.knobs = type(fake_provider.knobs)(redirect_to="http://127.0.0.1:9/elsewhere")
        r = await http.post(url, json=body)
        assert r.status_code == 307 and r.headers["Location"] == "http://127.0.0.1:9/elsewhere"
        fake_provider.knobs = type(fake_provider.knobs)(stall_after=2)
        async with http.stream("POST", url, json=body) as resp:
            lines = resp.aiter_lines()
            assert (await anext(lines)).startswith("data: ")
        rec = fake_provider.last()
        await rec.finished.wait()
        assert rec.disconnected and rec.frames_sent == 2
    assert fake_provider.requests[0].reset_by_fake and not fake_provider.requests[0].disconnected
