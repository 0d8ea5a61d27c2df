"""First light: one request per family through both planes."""

from __future__ import annotations

import httpx

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioned


async def test_openai_chat_reaches_upstream_with_slug(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    async with httpx.AsyncClient(base_url=dp.url) as client:
        resp = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {org.key}"},
            json={"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"]
    rec = fake_provider.last()
    assert rec.json()["model"] == org.slug("gpt-chat")
    assert rec.headers["Authorization"] == f"Bearer {fake_provider.secret('openai')}"
