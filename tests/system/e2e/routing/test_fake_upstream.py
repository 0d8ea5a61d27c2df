"""The switchable fake upstream itself: each mode answers as a real server in that state would."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from email.utils import parsedate_to_datetime

import anthropic
import httpx
import openai
import pytest

from tests.fakes.switchable import SwitchableUpstream
from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import MESSAGES


def _client(up: SwitchableUpstream, timeout: float = 5) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=up.secret, base_url=up.base_url, max_retries=0, timeout=timeout)


async def test_healthy_validates_like_the_api(upstream: MakeUpstream) -> None:
    up = await upstream("v")
    async with _client(up) as client:
        done = await client.chat.completions.create(model="v-slug", messages=MESSAGES)
        assert done.choices[0].message.content == "piece0 piece1 piece2 "
        stream = await client.chat.completions.create(model="v-slug", messages=MESSAGES, stream=True,
                                                      stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="other-slug", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="v-slug", messages=[])
    async with openai.AsyncOpenAI(api_key="wrong", base_url=up.base_url, max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="v-slug", messages=MESSAGES)
    assert [h.status for h in up.hits] == [200, 200, 404, 400, 401]


async def test_error_and_rate_limit_modes(upstream: MakeUpstream) -> None:
    up = await upstream("e")
    async with _client(up) as client:
        await up.switch("error", status=529, times=1)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="e-slug", messages=MESSAGES)
        assert caught.value.status_code == 529
        await client.chat.completions.create(model="e-slug", messages=MESSAGES)  # times=1: healthy again
        hints = {}
        for style in ("seconds", "date", "openai", "none"):
            await up.switch("rate_limited", retry_after=None if style == "none" else 2,
                            style="seconds" if style == "none" else style)  # type: ignore[arg-type]
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(model="e-slug", messages=MESSAGES)
            hints[style] = limited.value.response.headers
    assert hints["seconds"]["retry-after"] == "2"
    wait = parsedate_to_datetime(hints["date"]["retry-after"]).timestamp() - time.time()
    assert 1.0 < wait <= 3.0
    assert hints["openai"]["x-ratelimit-reset-requests"] == "2s" and "retry-after" not in hints["openai"]
    assert "retry-after" not in hints["none"] and "x-ratelimit-reset-requests" not in hints["none"]
    assert [h.mode for h in up.hits] == ["error", "healthy"] + ["rate_limited"] * 4


async def test_refused_then_listening_again_on_the_same_port(upstream: MakeUpstream) -> None:
    up = await upstream("r")
    port = up.port
    await up.switch("refused")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await up.switch("healthy")
    assert up.port == port
    async with httpx.AsyncClient(timeout=5) as http:
        resp = await http.post(f"{up.base_url}/chat/completions", json={"model": "r-slug", "messages": MESSAGES},
                               headers={"Authorization": f"Bearer {up.secret}"})
    assert resp.status_code == 200
    assert up.count() == 1


async def test_hang_and_resets(upstream: MakeUpstream) -> None:
    up = await upstream("h")
    await up.switch("hang")
    async with _client(up, timeout=0.5) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="h-slug", messages=MESSAGES)
    await up.switch("reset")
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(httpx.TransportError):
            await http.post(f"{up.base_url}/chat/completions", json={"model": "h-slug", "messages": MESSAGES},
                            headers={"Authorization": f"Bearer {up.secret}"})
    await up.switch("reset_after_first_chunk")
    got: list[str] = []
    async with _client(up) as client:
        stream = await client.chat.completions.create(model="h-slug", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIConnectionError):
            async for chunk in stream:
                got.append(chunk.choices[0].delta.content or "")
    assert got == ["", "piece0 "]
    await asyncio.sleep(0.1)
    assert [(h.mode, h.status, h.cut) for h in up.hits] == [
        ("hang", 0, False), ("reset", 0, True), ("reset_after_first_chunk", 0, True)]
    assert all(h.ended is not None for h in up.hits)


async def test_anthropic_family(upstream: MakeUpstream) -> None:
    up = await upstream("c", "anthropic")
    async with anthropic.AsyncAnthropic(api_key=up.secret, base_url=up.base_url, max_retries=0) as client:
        message = await client.messages.create(model="c-slug", max_tokens=16, messages=MESSAGES)
        assert message.content
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.create(model="other", max_tokens=16, messages=MESSAGES)
        await up.switch("rate_limited", retry_after=2, style="anthropic")
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="c-slug", max_tokens=16, messages=MESSAGES)
    reset = limited.value.response.headers["anthropic-ratelimit-requests-reset"]
    wait = datetime.fromisoformat(reset).timestamp() - time.time()
    assert 1.0 < wait <= 3.0 and "retry-after" not in limited.value.response.headers
    assert limited.value.body == {"type": "error", "error": {"type": "rate_limit_error",
                                                            "message": "fake c: rate limit reached"},
                                  "request_id": "req_fake0001"}
