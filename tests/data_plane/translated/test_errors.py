"""Errors of translated chat completions in OpenAI's shape (issue 13): provider errors mapped
(context overflow, 429 with Retry-After, 529/5xx), the gateway's own (unknown model, no opt-in,
a broken stream), vLLM's pass-through, limits; every answer carries x-request-id."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import openai
import pytest

from odock.v1 import common_pb2, keys_pb2
from tests.data_plane.translated.conftest import Org, script_gemini
from tests.data_plane.translated.test_chat import client
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes import gemini_generate
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MESSAGES: Any = [{"role": "user", "content": "hello"}]
OVERFLOW = {
    "anthropic": {"type": "error", "error": {"type": "invalid_request_error",
                                             "message": "prompt is too long: 250000 tokens > 200000 maximum"}},
    "gemini": {"error": {"code": 400, "status": "INVALID_ARGUMENT",
                         "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."}},
}  # fmt: skip
MODEL = {"anthropic": "claude-x", "gemini": "gem-x"}


async def post(dp: DataPlaneProcess, org: Org, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http:
        return await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {org.key}"}
        )


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    assert resp.headers["x-request-id"] and resp.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


@pytest.mark.parametrize("family", ["anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
async def test_context_overflow_is_context_length_exceeded(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, family: str, stream: bool
) -> None:
    fake.knobs.status = 400
    fake.knobs.error_body = json.dumps(OVERFLOW[family]).encode()
    with pytest.raises(openai.BadRequestError) as caught:
        await client(dp, org).chat.completions.create(model=MODEL[family], messages=MESSAGES, stream=stream)
    err = caught.value
    assert err.code == "context_length_exceeded" and err.type == "invalid_request_error"
    assert err.response.headers["x-request-id"]


@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_rate_limited_keeps_429_and_retry_after(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, family: str
) -> None:
    fake.knobs.status = 429
    fake.knobs.extra_headers = {"Retry-After": "17"}
    resp = await post(dp, org, {"model": MODEL[family], "messages": MESSAGES})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "17"
    assert openai_error(resp)["type"] in ("rate_limit_error", "rate_limit_exceeded", "requests")


@pytest.mark.parametrize(("family", "status"), [("anthropic", 529), ("anthropic", 500), ("gemini", 503)])
async def test_provider_overload_and_5xx_are_openai_5xx(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries, family: str, status: int
) -> None:
    fake.knobs.status = status
    resp = await post(dp, org, {"model": MODEL[family], "messages": MESSAGES})
    assert 500 <= resp.status_code <= 599
    openai_error(resp)
    rec = await queries.record(resp.headers["x-odock-request-id"])
    assert rec.outcome == common_pb2.OUTCOME_ERROR and rec.http_status == resp.status_code


async def test_unknown_model_is_404_without_upstream_call(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    resp = await post(dp, org, {"model": "no-such-model", "messages": MESSAGES})
    assert resp.status_code == 404 and openai_error(resp)["code"] == "model_not_found"
    assert fake.requests == []


async def test_model_without_opt_in_keeps_the_native_rule(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    resp = await post(dp, org, {"model": "claude-native", "messages": MESSAGES})
    assert resp.status_code == 400
    error = openai_error(resp)
    assert error["code"] == "provider_not_allowed" and error["param"] == "model"
    assert error["message"] == (
        "The model 'claude-native' is an anthropic model; this endpoint serves openai models"
    )
    assert fake.requests == []


async def test_openai_models_are_unchanged_and_vllm_passes_through(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    oai = client(dp, org)
    native = await oai.chat.completions.create(model="gpt-x", messages=MESSAGES)
    assert fake.last().family == "openai" and fake.last().json()["model"] == "gpt-4.1-mini"
    assert native.choices[0].message.content
    raw = await oai.chat.completions.with_raw_response.create(model="llama-x", messages=MESSAGES)
    assert raw.parse().choices[0].message.content
    sent = fake.last()
    assert sent.family == "vllm" and sent.native_path == "/v1/chat/completions"
    assert sent.json()["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    rec = await queries.record(raw.headers["x-odock-request-id"])
    assert rec.family == common_pb2.PROVIDER_FAMILY_VLLM and rec.input_tokens > 0


async def test_invalid_translation_is_400_before_any_upstream_call(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    resp = await post(dp, org, {"model": "claude-x", "messages": [{"role": "assistant", "content": "hi"}]})
    assert resp.status_code == 400 and openai_error(resp)["type"] == "invalid_request_error"
    resp = await post(dp, org, {"model": "claude-x", "messages": MESSAGES, "n": 0})
    assert resp.status_code == 400 and openai_error(resp)["param"] == "n"
    assert fake.requests == []


@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_broken_stream_ends_with_an_openai_error_chunk(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries, family: str
) -> None:
    if family == "gemini":
        script_gemini(fake, gemini_generate.Script(candidates=(gemini_generate.text("a", "b", "c", "d"),)))
    fake.knobs.reset_after = 2
    raw = await client(dp, org).chat.completions.with_raw_response.create(
        model=MODEL[family], messages=MESSAGES, stream=True
    )
    with pytest.raises(openai.APIError) as caught:
        async for _ in raw.parse():
            pass
    assert "closed the connection" in caught.value.message
    rec = await queries.record(raw.headers["x-odock-request-id"])
    assert rec.outcome == common_pb2.OUTCOME_PARTIAL and rec.error_code == "upstream_reset"


MINUTE_SECONDS = 60  # the data plane's and control plane's default per-minute window


async def test_limits_apply_to_translated_requests(
    cp: ControlPlaneProcess, dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        key = keys_pb2.VirtualKey(org_id=org.id, name="rpm-two", all_models=True,
                                  limits=common_pb2.KeyLimits(requests_per_minute=2))  # fmt: skip
        created = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
        )
    limited = Org(org.id, created.secret)
    # Per-minute windows are aligned on the epoch: three requests that straddle a boundary would
    # meet two windows. Close to one, start just after it instead.
    now = time.time()
    left = MINUTE_SECONDS - now % MINUTE_SECONDS
    if left < 20:
        await asyncio.sleep(left + 0.05)
    statuses = []
    for _ in range(3):
        resp = await post(dp, limited, {"model": "claude-x", "messages": MESSAGES})
        statuses.append(resp.status_code)
        assert resp.headers["x-request-id"]
        if resp.status_code == 200:
            assert resp.headers["x-ratelimit-limit-requests"] == "2"
    assert statuses == [200, 200, 429]
    assert openai_error(resp)["code"]
    assert len(fake.requests) == 2


async def test_broken_stream_of_n_choices_ends_with_one_error_chunk(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, queries: UsageQueries
) -> None:
    fake.knobs.reset_after = 3
    raw = await client(dp, org).chat.completions.with_raw_response.create(
        model="claude-x", messages=MESSAGES, stream=True, n=2
    )
    with pytest.raises(openai.APIError) as caught:
        async for _ in raw.parse():
            pass
    assert "closed the connection" in caught.value.message
    rec = await queries.record(raw.headers["x-odock-request-id"])
    assert rec.outcome == common_pb2.OUTCOME_PARTIAL and rec.error_code == "upstream_reset"
    assert len(fake.requests) == 2
