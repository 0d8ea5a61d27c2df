"""Streaming relay: SDK streams per family, incremental delivery, disconnects, stalls and resets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioned

MSGS: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


async def _until(body: AsyncIterator[bytes], marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        seen += await anext(body)
    return seen


def _genai(dp: DataPlaneProcess, key: str) -> genai.Client:
    return genai.Client(
        api_key=key, http_options=genai_types.HttpOptions(base_url=dp.url, api_version="v1beta")
    )


async def test_sdk_streams_every_family(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    fake_provider.knobs.chunks = 4
    want = "piece0 piece1 piece2 piece3 "
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        chunks = [
            c
            async for c in await client.chat.completions.create(model="gpt-chat", messages=MSGS, stream=True)
        ]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
        assert fake_provider.last().json()["model"] == org.slug("gpt-chat") and fake_provider.last().complete
        events = [e async for e in await client.responses.create(model="gpt-chat", input="x", stream=True)]
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == want
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1/vllm", max_retries=0) as vllm:
        chunks = [
            c async for c in await vllm.chat.completions.create(model="llama", messages=MSGS, stream=True)
        ]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want
        assert fake_provider.last().json()["model"] == org.slug("llama")
    async with anthropic.AsyncAnthropic(api_key=org.key, base_url=dp.url, max_retries=0) as claude:
        async with claude.messages.stream(
            model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = "".join([t async for t in stream.text_stream])
        assert text == want
    pieces = [
        c.text
        async for c in await _genai(dp, org.key).aio.models.generate_content_stream(
            model="gemini-flash", contents="hi"
        )
    ]
    assert "".join(p or "" for p in pieces) == want
    rec = fake_provider.last()
    assert rec.path.endswith(f"/models/{org.slug('gemini-flash')}:streamGenerateContent")
    assert rec.query.get("alt") == "sse"


@pytest.mark.parametrize("family", FAMILIES)
async def test_first_chunk_reaches_client_before_upstream_finishes(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    release = asyncio.Event()
    fake_provider.knobs.hold_last = release
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=org.key)
    async with (
        httpx.AsyncClient(base_url=dp.url, timeout=10) as client,
        client.stream("POST", call.path, content=call.body, headers=call.headers) as resp,
    ):
        assert resp.status_code == 200
        body = resp.aiter_bytes()
        first = await asyncio.wait_for(_until(body, b"piece1"), 5)
        rec = fake_provider.last()
        assert not rec.complete, "the client holds a chunk while the provider has not sent its last piece"
        release.set()
        rest = b"".join([c async for c in body])
    assert rec.complete and b"piece2" in first + rest


@pytest.mark.parametrize("family", FAMILIES)
async def test_client_disconnect_mid_stream_closes_the_upstream_connection(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str
) -> None:
    fake_provider.knobs.hold_last = asyncio.Event()  # never released: the provider is mid-answer
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=org.key)
    async with (
        httpx.AsyncClient(base_url=dp.url, timeout=10) as client,
        client.stream("POST", call.path, content=call.body, headers=call.headers) as resp,
    ):
        await asyncio.wait_for(_until(resp.aiter_bytes(), b"piece0"), 5)
        rec = fake_provider.last()
    # leaving the block closed the client connection mid-stream
    await asyncio.wait_for(rec.finished.wait(), 1.0)
    assert rec.disconnected and not rec.complete


def _events(raw: bytes) -> list[str]:
    return [e for e in raw.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fault", ["stall", "reset"])
async def test_broken_upstream_stream_ends_with_an_error_event(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str, fault: str
) -> None:
    fake_provider.knobs.chunks = 6
    if fault == "stall":
        fake_provider.knobs.stall_after = 2
    else:
        fake_provider.knobs.reset_after = 2
    call = chat_call(family, CHAT_MODEL[family], stream=True, key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await send(client, call)  # a complete HTTP message: the stream was ended, not cut
        assert resp.status_code == 200
        events = _events(resp.content)
        assert len(events) == 3, events
        last = events[-1]
        if family == "anthropic":
            assert last.startswith("event: error\ndata: ")
        payload = json.loads(last.split("data: ", 1)[1])
        status, code = (504, "upstream_timeout") if fault == "stall" else (502, "upstream_reset")
        if family == "anthropic":
            assert payload["type"] == "error" and payload["error"]["code"] == code
        elif family == "gemini":
            assert payload["error"]["code"] == status and payload["error"]["details"][0]["reason"] == code
        else:
            assert payload["error"]["code"] == code and payload["error"]["type"] == "api_error"
        # the node is healthy afterwards
        fake_provider.reset()
        assert (await send(client, chat_call(family, CHAT_MODEL[family], key=org.key))).status_code == 200
        assert (await client.get("/healthz")).status_code == 200


async def test_sdks_raise_on_a_stalled_stream(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    fake_provider.knobs.stall_after = 1
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.APIError, match="stopped sending"):
            async for _ in await client.chat.completions.create(model="gpt-chat", messages=MSGS, stream=True):
                pass
    async with anthropic.AsyncAnthropic(api_key=org.key, base_url=dp.url, max_retries=0) as claude:
        with pytest.raises(anthropic.APIStatusError, match="stopped sending"):
            async with claude.messages.stream(
                model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                async for _ in stream.text_stream:
                    pass
    with pytest.raises(genai_errors.ServerError) as err:
        async for _ in await _genai(dp, org.key).aio.models.generate_content_stream(
            model="gemini-flash", contents="hi"
        ):
            pass
    assert err.value.code == 504


async def test_broken_gemini_json_array_stream_is_cut_not_completed(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    fake_provider.knobs.reset_after = 2
    call = chat_call("gemini", "gemini-flash", key=org.key)
    path = call.path.replace(":generateContent", ":streamGenerateContent")  # no alt=sse: a JSON array
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(path, content=call.body, headers=call.headers)
        fake_provider.reset()
        ok = await client.post(path, content=call.body, headers=call.headers)
        assert ok.status_code == 200 and len(ok.json()) == 3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fault", ["stall", "reset"])
async def test_broken_non_streamed_answer_is_an_error_not_a_truncated_200(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, family: str, fault: str
) -> None:
    if fault == "stall":
        fake_provider.knobs.stall_after = 20
    else:
        fake_provider.knobs.reset_after = 20
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await send(client, chat_call(family, CHAT_MODEL[family], key=org.key))
        if fault == "stall":
            assert_error(family, resp, 504, "upstream_timeout")
        else:
            assert_error(family, resp, 502, "upstream_reset")
        fake_provider.reset()
        assert (await send(client, chat_call(family, CHAT_MODEL[family], key=org.key))).status_code == 200


async def test_client_disconnect_while_waiting_for_upstream_cancels_it(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    fake_provider.knobs.delay_before_headers = 10.0
    call = chat_call("openai", "gpt-chat", key=org.key)
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        pending = asyncio.create_task(send(client, call))
        rec = (await fake_provider.wait_for_requests(1))[0]
        pending.cancel()  # the client gives up mid-request
        with pytest.raises(asyncio.CancelledError):
            await pending
    await asyncio.wait_for(rec.finished.wait(), 1.0)
    assert rec.disconnected and not rec.complete
