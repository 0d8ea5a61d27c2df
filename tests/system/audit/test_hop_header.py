"""The loop guard from outside: a client cannot smuggle the hop header past the gateway in any
spelling, on any native route, and what reaches an upstream carries exactly one."""

from __future__ import annotations

import httpx

from data_plane.providers import DIALECTS
from data_plane.providers.headers import HOP_HEADER, build_headers
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned


def test_forwarded_headers_carry_exactly_one_hop_header() -> None:
    client = [("X-Odock-Hop", "0"), ("x-odock-hop", ""), ("X-ODOCK-HOP", "9"), ("Connection", "x-odock-hop")]
    for dialect in DIALECTS.values():
        out = build_headers(dialect, client + [("Accept", "*/*")], "sk-provider")
        assert [k for k in out if k.lower() == HOP_HEADER] == [HOP_HEADER] and out[HOP_HEADER] == "1"


async def test_what_reaches_the_upstream_carries_exactly_one_hop_header(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        chat = {"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]}
        resp = await client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {org.key}", "Connection": "x-odock-hop"},
            json=chat,
        )
        assert resp.status_code == 200, resp.text
        resp = await client.post(
            "/v1beta/models/gemini-flash:generateContent",
            params={"key": org.key},
            json={"contents": [{"parts": [{"text": "hi"}]}]},
        )
        assert resp.status_code == 200, resp.text
    assert len(fake.requests) == 2
    for seen in fake.requests:
        assert seen.headers.getall(HOP_HEADER) == ["1"], seen.headers


async def test_any_spelling_of_the_hop_header_is_refused_on_every_native_route(
    gateway: str, org: Provisioned
) -> None:
    auth = {"Authorization": f"Bearer {org.key}"}
    chat = {"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]}
    gemini = "/v1beta/models/gemini-flash:generateContent"
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as client:
        for headers in ({"X-Odock-Hop": "1"}, {"x-odock-hop": ""}, {"X-ODOCK-HOP": "anything"}):
            resp = await client.post("/v1/chat/completions", headers={**auth, **headers}, json=chat)
            assert resp.status_code == 508 and resp.json()["error"]["code"] == "loop_detected", resp.text
        twice = httpx.Headers([("x-odock-hop", "1"), ("X-Odock-Hop", "2"), *auth.items()])
        resp = await client.post("/v1/chat/completions", headers=twice, json=chat)
        assert resp.status_code == 508
        resp = await client.post(f"{gemini}?key={org.key}", headers={"x-odock-hop": "1"},
                                 json={"contents": [{"parts": [{"text": "hi"}]}]})  # fmt: skip
        assert resp.status_code == 508 and resp.json()["error"]["status"], resp.text
        resp = await client.post("/v1/messages", headers={"x-api-key": org.key, "x-odock-hop": "1"}, json={})
        assert resp.status_code == 508 and resp.json()["error"]["code"] == "loop_detected"
        # listings are answered by the gateway itself and never forwarded: no loop to stop
        resp = await client.get("/v1/models", headers={**auth, "x-odock-hop": "1"})
        assert resp.status_code == 200
