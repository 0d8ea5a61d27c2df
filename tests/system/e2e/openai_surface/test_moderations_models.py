"""Moderations (metered) and the model listing's GET /v1/models/{id}."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import MODELS, Surface, UsageReader, sdk


async def test_moderations_forwarded_and_metered(gateway: str, fake: FakeProvider, org_a: Surface,
                                                 usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        resp = await client.moderations.with_raw_response.create(model="mod-gw", input=["fine", "kill it"])
        out = resp.parse()
    assert [r.flagged for r in out.results] == [False, True] and out.results[1].categories.violence
    assert [r.native_path for r in fake.requests] == ["/v1/moderations"]
    assert fake.requests[0].json() == {"model": "omni-moderation-latest", "input": ["fine", "kill it"]}
    rec = await usage.by_request_id(org_a.org_id, resp.headers["x-odock-request-id"])
    assert (rec.endpoint, rec.model_name, rec.http_status) == ("/v1/moderations", "mod-gw", 200)


async def test_every_listed_model_can_be_retrieved(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    async with sdk(gateway, org_a.key) as client:
        listed = [m.id async for m in client.models.list()]
        # what the OpenAI API can call: the openai-family models (claude is not openai_compatible)
        assert set(listed) == set(MODELS) - {"claude"}
        for name in listed:
            model = await client.models.retrieve(name)
            assert model.id == name and model.object == "model"
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"
    assert fake.requests == []


async def test_model_retrieval_respects_key_scope(gateway: str, org_a: Surface) -> None:
    key = await org_a.key_for(["gpt-chat"])
    async with sdk(gateway, key) as client:
        assert (await client.models.retrieve("gpt-chat")).id == "gpt-chat"
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.models.retrieve("whisper-gw")
    assert info.value.code == "model_not_allowed"
