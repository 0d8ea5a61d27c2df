"""Every row of the error table (docs/errors.md) in each family's shape, and the SDK exception each raises."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from google.protobuf import field_mask_pb2

from odock.v1 import models_pb2
from tests.data_plane.conftest import MAX_BODY
from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, provision_all_families

_SLUG = {"openai": "gpt-x", "anthropic": "claude-x", "gemini": "gemini-x", "vllm": "org/llama-x"}


@dataclass
class Extra:
    """An org with, per family, a slow model (0.1 s timeout), a dead one, a disabled one, and a restricted key."""

    org: Provisioned
    restricted_key: str


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest_asyncio.fixture
async def extra(
    cp: ControlPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> AsyncIterator[Extra]:
    dead = _dead_url()
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        for family in FAMILIES:
            cred = org.credentials[family].name
            base = fake_provider.base_url(family)
            await admin.create_model(
                org.org.id, f"slow-{family}", family, _SLUG[family], base, cred, timeout_s=0.1
            )
            await admin.create_model(org.org.id, f"dead-{family}", family, _SLUG[family], dead, cred)
            off = await admin.create_model(org.org.id, f"off-{family}", family, _SLUG[family], base, cred)
            off.enabled = False
            await admin.models.UpdateModel(
                models_pb2.UpdateModelRequest(
                    model=off, update_mask=field_mask_pb2.FieldMask(paths=["enabled"])
                ),
                metadata=admin.metadata,
            )
        _, restricted = await admin.create_key(org.org.id, models=["gpt-chat"])
    yield Extra(org, restricted)


@pytest.mark.parametrize("family", FAMILIES)
async def test_error_table_rows_in_family_shape(
    dp: DataPlaneProcess, extra: Extra, fake_provider: FakeProvider, family: str
) -> None:
    key = extra.org.key
    other = {"openai": "claude", "anthropic": "gpt-chat", "gemini": "llama", "vllm": "gemini-flash"}[family]
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        # model not found; a disabled model is indistinguishable from a missing one
        assert_error(
            family, await send(client, chat_call(family, "no-such-model", key=key)), 404, "model_not_found"
        )
        assert_error(
            family, await send(client, chat_call(family, f"off-{family}", key=key)), 404, "model_not_found"
        )
        # model exists but this key may not use it
        not_allowed = "text-embed" if family == "openai" else CHAT_MODEL[family]
        resp = await send(client, chat_call(family, not_allowed, key=extra.restricted_key))
        assert_error(family, resp, 403, "model_not_allowed")
        # model of another family
        assert_error(
            family, await send(client, chat_call(family, other, key=key)), 400, "provider_not_allowed"
        )
        # malformed JSON
        call = chat_call(family, CHAT_MODEL[family], key=key)
        resp = await client.post(call.path, content=b'{"model": "x", "messages": [', headers=call.headers)
        assert_error(family, resp, 400, "invalid_json")
        # missing model (the model is in the path for gemini)
        if family != "gemini":
            assert_error(family, await send(client, chat_call(family, None, key=key)), 400, "missing_model")
        # body too large, declared and chunked
        big = b'{"model": "' + b"x" * (MAX_BODY + 10) + b'"}'
        resp = await client.post(call.path, content=big, headers=call.headers)
        assert_error(family, resp, 413, "request_too_large")

        async def chunks() -> AsyncIterator[bytes]:
            chunk = b" " * 262144
            for _ in range(MAX_BODY // len(chunk) + 2):
                yield chunk

        resp = await client.post(call.path, content=chunks(), headers=call.headers)
        assert "content-length" not in resp.request.headers
        assert_error(family, resp, 413, "request_too_large")
        # upstream too slow for the model's timeout, then unreachable
        fake_provider.knobs.delay_before_headers = 1.0
        resp = await send(client, chat_call(family, f"slow-{family}", key=key))
        assert_error(family, resp, 504, "upstream_timeout")
        fake_provider.knobs.delay_before_headers = 0.0
        assert_error(
            family,
            await send(client, chat_call(family, f"dead-{family}", key=key)),
            502,
            "upstream_unreachable",
        )
        # redirects are not followed
        fake_provider.knobs.redirect_to = "http://127.0.0.1:1/elsewhere"
        resp = await send(client, chat_call(family, CHAT_MODEL[family], key=key))
        assert_error(family, resp, 502, "upstream_redirect")
        fake_provider.knobs.redirect_to = None
        # provider errors pass through as sent
        fake_provider.knobs.status = 429
        fake_provider.knobs.extra_headers = {"retry-after": "7"}
        resp = await send(client, chat_call(family, CHAT_MODEL[family], key=key))
        assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
        assert "fake upstream error" in resp.text and resp.headers["x-request-id"]


async def test_openai_sdk_raises_its_usual_exceptions(dp: DataPlaneProcess, extra: Extra) -> None:
    msgs: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with openai.AsyncOpenAI(api_key=extra.org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as nf:
            await client.chat.completions.create(model="no-such-model", messages=msgs)
        assert nf.value.code == "model_not_found" and "no-such-model" in nf.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="claude", messages=msgs)
        assert bad.value.code == "provider_not_allowed"
        with pytest.raises(openai.InternalServerError) as slow:
            await client.chat.completions.create(model="dead-openai", messages=msgs)
        assert slow.value.status_code == 502 and slow.value.code == "upstream_unreachable"
    async with openai.AsyncOpenAI(
        api_key=extra.restricted_key, base_url=dp.url + "/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await client.chat.completions.create(model="text-embed", messages=msgs)
        assert denied.value.code == "model_not_allowed"
    async with openai.AsyncOpenAI(api_key="odk-nope", base_url=dp.url + "/v1", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError) as auth:
            await client.chat.completions.create(model="gpt-chat", messages=msgs)
        assert auth.value.code == "invalid_api_key"
    async with openai.AsyncOpenAI(
        api_key=extra.org.key, base_url=dp.url + "/v1/vllm", max_retries=0
    ) as client:
        with pytest.raises(openai.BadRequestError) as vbad:
            await client.chat.completions.create(model="gpt-chat", messages=msgs)
        assert vbad.value.code == "provider_not_allowed"


async def test_anthropic_sdk_raises_its_usual_exceptions(dp: DataPlaneProcess, extra: Extra) -> None:
    msgs: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    async with anthropic.AsyncAnthropic(api_key=extra.org.key, base_url=dp.url, max_retries=0) as client:
        with pytest.raises(anthropic.NotFoundError) as nf:
            await client.messages.create(model="no-such-model", max_tokens=8, messages=msgs)
        assert nf.value.body["error"]["code"] == "model_not_found"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            await client.messages.create(model="gpt-chat", max_tokens=8, messages=msgs)
        assert "openai model" in bad.value.message
        with pytest.raises(anthropic.InternalServerError):
            await client.messages.create(model="dead-anthropic", max_tokens=8, messages=msgs)
    async with anthropic.AsyncAnthropic(
        api_key=extra.restricted_key, base_url=dp.url, max_retries=0
    ) as client:
        with pytest.raises(anthropic.PermissionDeniedError):
            await client.messages.create(model="claude", max_tokens=8, messages=msgs)
    async with anthropic.AsyncAnthropic(api_key="odk-nope", base_url=dp.url, max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="claude", max_tokens=8, messages=msgs)


async def test_genai_sdk_raises_its_usual_exceptions(dp: DataPlaneProcess, extra: Extra) -> None:
    def client(key: str) -> genai.Client:
        opts = genai_types.HttpOptions(base_url=dp.url, api_version="v1beta", retry_options=None)
        return genai.Client(api_key=key, http_options=opts)

    good = client(extra.org.key).aio
    with pytest.raises(genai_errors.ClientError) as nf:
        await good.models.generate_content(model="no-such-model", contents="hi")
    assert nf.value.code == 404 and nf.value.status == "NOT_FOUND"
    with pytest.raises(genai_errors.ClientError) as bad:
        await good.models.generate_content(model="claude", contents="hi")
    assert bad.value.code == 400 and "anthropic model" in (bad.value.message or "")
    with pytest.raises(genai_errors.ServerError) as dead:
        await good.models.generate_content(model="dead-gemini", contents="hi")
    assert dead.value.code == 502
    with pytest.raises(genai_errors.ClientError) as denied:
        await client(extra.restricted_key).aio.models.generate_content(model="gemini-flash", contents="hi")
    assert denied.value.code == 403 and denied.value.status == "PERMISSION_DENIED"
    with pytest.raises(genai_errors.ClientError) as unauth:
        await client("odk-nope").aio.models.generate_content(model="gemini-flash", contents="hi")
    assert unauth.value.code == 401


async def test_default_model_per_endpoint_fills_a_missing_model(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, fake_provider: FakeProvider
) -> None:
    setup = await provision_all_families(
        cp, fake_provider, default_models={"/v1/images/generations": "image-gen"}
    )
    async with openai.AsyncOpenAI(api_key=setup.key, base_url=dp.url + "/v1", max_retries=0) as client:
        resp = await client.with_raw_response.images.generate(prompt="a cat")
        assert resp.status_code == 200
        assert fake_provider.last().json()["model"] == setup.slug("image-gen")
        with pytest.raises(openai.BadRequestError) as missing:
            await client.post("/embeddings", body={"input": "x"}, cast_to=object)
        assert missing.value.code == "missing_model"
