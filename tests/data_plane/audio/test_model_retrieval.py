"""``GET /v1/models/{id}`` and ``GET /v1/vllm/models/{id}`` with the openai SDK: every listed model is
retrievable as the very object the list shows (opted-in models of other families included), and a
model that does not exist is OpenAI's 404."""

from __future__ import annotations

import openai
import pytest

from tests.data_plane.audio.conftest import OPTED_IN, AudioOrg
from tests.support.dataplane import DataPlaneProcess

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


async def test_every_listed_model_is_retrievable_as_listed(dp: DataPlaneProcess, org: AudioOrg) -> None:
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        listed = [m async for m in client.models.list()]
        retrieved = [await client.models.retrieve(m.id) for m in listed]
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("no-such-model")
    ids = {m.id for m in listed}
    assert OPTED_IN <= ids and {"whisper", "tts", "moderation"} <= ids  # another family's opted-in model too
    assert "llama" not in ids and "claude" not in ids  # not callable through the OpenAI API
    assert [r.to_dict() for r in retrieved] == [m.to_dict() for m in listed]
    assert {m.id: m.owned_by for m in listed}["claude-open"] == "anthropic"
    assert missing.value.code == "model_not_found"
    body = missing.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["param"] == "model"
    assert body["message"].startswith("The model 'no-such-model' does not exist")


async def test_vllm_models_are_retrievable_under_the_vllm_prefix(dp: DataPlaneProcess, org: AudioOrg) -> None:
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1/vllm", max_retries=0) as vllm:
        listed = [m async for m in vllm.models.list()]
        retrieved = [await vllm.models.retrieve(m.id) for m in listed]
        with pytest.raises(openai.NotFoundError) as other_family:
            await vllm.models.retrieve("whisper")  # an OpenAI model: not a vLLM one
        with pytest.raises(openai.NotFoundError) as missing:
            await vllm.models.retrieve("nope")
    assert [m.id for m in listed] == ["llama"] and listed[0].owned_by == "vllm"
    assert [r.to_dict() for r in retrieved] == [m.to_dict() for m in listed]
    assert other_family.value.code == missing.value.code == "model_not_found"


async def test_retrieval_needs_a_valid_key(dp: DataPlaneProcess, org: AudioOrg) -> None:
    for base in ("/v1", "/v1/vllm"):
        async with openai.AsyncOpenAI(
            api_key="sk-not-a-key", base_url=dp.url + base, max_retries=0
        ) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.models.retrieve("llama")
