"""Translated streams are not buffered: the first chunk reaches the client while the provider is
still generating (issue 13); the client's x-request-id is echoed; an unreachable upstream is the
OpenAI-shaped 502 the native endpoint gives."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from google.protobuf import duration_pb2

from odock.v1 import models_pb2
from tests.data_plane.translated.conftest import PRICING, Org, script_gemini
from tests.data_plane.translated.test_chat import client
from tests.fakes import gemini_generate
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner, family_enum

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MESSAGES: Any = [{"role": "user", "content": "a long enough question to stream"}]


@pytest.mark.parametrize("model", ["claude-x", "gem-x"])
async def test_first_chunk_arrives_before_the_provider_finishes(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider, model: str
) -> None:
    if model == "gem-x":
        script_gemini(
            fake, gemini_generate.Script(candidates=(gemini_generate.text("one ", "two ", "three"),))
        )
    release = asyncio.Event()
    fake.knobs.hold_last = release  # the fake cannot finish until the client has seen a chunk
    stream = await client(dp, org).chat.completions.create(model=model, messages=MESSAGES, stream=True)
    try:
        first = await asyncio.wait_for(anext(aiter(stream)), 10)
        assert first.choices and first.choices[0].delta.role == "assistant"
        assert not fake.last().complete
        release.set()
        rest = [chunk async for chunk in stream]
    finally:
        release.set()
        await stream.close()
    assert rest and rest[-1].choices and rest[-1].choices[0].finish_reason == "stop"
    assert fake.last().complete


async def test_client_request_id_is_echoed(dp: DataPlaneProcess, org: Org, fake: FakeProvider) -> None:
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "claude-x", "messages": MESSAGES},
            headers={"Authorization": f"Bearer {org.key}", "x-request-id": "my-trace-0001"},
        )
    assert resp.status_code == 200 and resp.headers["x-request-id"] == "my-trace-0001"
    assert resp.headers["x-odock-request-id"] != "my-trace-0001"
    assert float(resp.headers["x-odock-overhead-ms"]) >= 0


async def test_unreachable_upstream_is_openai_502(
    cp: ControlPlaneProcess, dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        model = models_pb2.Model(
            org_id=org.id, name="claude-gone", family=family_enum("anthropic"), upstream_slug="claude-x",
            base_url="http://127.0.0.1:9", timeout=duration_pb2.Duration(seconds=5), credential="anthropic-c",
            pricing=PRICING, openai_compatible=True,
        )  # fmt: skip
        await admin.models.CreateModel(models_pb2.CreateModelRequest(model=model), metadata=admin.metadata)
    with pytest.raises(openai.APIStatusError) as caught:
        await client(dp, org).chat.completions.create(model="claude-gone", messages=MESSAGES)
    err = caught.value
    assert err.status_code == 502 and err.code == "upstream_unreachable"
    assert err.response.headers["x-request-id"] and fake.requests == []


async def test_a_provider_echoing_its_key_never_reaches_the_client(
    dp: DataPlaneProcess, org: Org, fake: FakeProvider
) -> None:
    secret = fake.secret("gemini")
    script_gemini(fake, gemini_generate.Script(candidates=(gemini_generate.text("piece0 and more", "tail"),)))
    fake.knobs.echo_key = "stream"  # the key in place of "piece0", written in two halves
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http:
        body = {"model": "gem-x", "messages": MESSAGES, "stream": True}
        resp = await http.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {org.key}"}
        )
    assert resp.status_code == 200 and resp.text.endswith("data: [DONE]\n\n")
    assert secret not in resp.text and "[redacted]" in resp.text
    for how in ("body", "header"):
        fake.knobs.echo_key = how
        for model in ("gem-x", "claude-x"):
            async with httpx.AsyncClient(base_url=dp.url, timeout=15) as http:
                resp = await http.post(
                    "/v1/chat/completions",
                    json={"model": model, "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {org.key}"},
                )
            assert resp.status_code >= 400 and resp.json()["error"]["message"]
            leaked = resp.text + "".join(f"{k}: {v}" for k, v in resp.headers.items())
            assert secret not in leaked and fake.secret("anthropic") not in leaked
