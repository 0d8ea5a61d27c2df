"""Passthrough fidelity: slug in, provider key in the right header, the virtual key nowhere, the rest byte-identical."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.e2e.checks import assert_forwarded

# Odd spacing and key order, escapes, raw UTF-8, numbers as written, unknown fields, and
# upstream-steering fields the gateway must not act on.
CHAT_BODY = (
    b'{ "messages" : [{"role":"user","content":"h\\u00e9llo \xe2\x9c\x93 \\"q\\""}],\n'
    b'  "model" :  "gpt-chat", "temperature":0.30, "top_p":1e0,'
    b' "x_unknown":{"nested":[1,2.50,{"deep":null}], "model":"not-the-routing-one"},'
    b' "api_base":"http://127.0.0.1:9/evil", "metadata":{"base_url":"http://127.0.0.1:9/evil","api_key":"sk-evil"}}'
)


def _spliced(body: bytes, name: str, slug: str) -> bytes:
    needle = b'"model" :  "' + name.encode() + b'"'
    assert body.count(needle) == 1
    return body.replace(needle, b'"model" :  "' + slug.encode() + b'"')


async def test_json_body_byte_identical_but_the_model(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1/chat/completions", content=CHAT_BODY,
                               headers={"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    rec = assert_forwarded(fake, org, family="openai", path="/v1/chat/completions", model="gpt-chat")
    assert rec.body == _spliced(CHAT_BODY, "gpt-chat", org.slug("gpt-chat"))
    assert rec.query == {}


async def test_anthropic_headers_kept_hop_by_hop_dropped(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    body = b'{"model" :  "claude","max_tokens":16,"messages":[{"role":"user","content":"hi"}],"x_new_field":[true]}'
    headers = {
        "x-api-key": org.key, "anthropic-version": "2023-06-01",
        "anthropic-beta": "prompt-caching-2024-07-31,token-efficient-tools-2025-02-19",
        "Content-Type": "application/json", "Connection": "keep-alive, x-hop-only", "x-hop-only": "1",
        "Keep-Alive": "timeout=5", "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers",
        "x-client-trace": "trace-123",
    }
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1/messages", content=body, headers=headers)
    assert resp.status_code == 200, resp.text
    rec = assert_forwarded(fake, org, family="anthropic", path="/v1/messages", model="claude")
    assert rec.body == _spliced(body, "claude", org.slug("claude"))
    assert rec.headers.getall("anthropic-version") == ["2023-06-01"]
    assert rec.headers.getall("anthropic-beta") == [headers["anthropic-beta"]]
    for hop in ("x-hop-only", "keep-alive", "proxy-authorization", "te"):
        assert hop not in rec.headers, hop
    assert rec.headers.get("x-client-trace") == "trace-123"


@pytest.mark.parametrize("style", ["bearer", "x-api-key", "x-goog-api-key", "query"])
async def test_every_auth_style_reaches_upstream_with_only_the_provider_key(
        gateway: str, org: Provisioned, fake: FakeProvider, style: str) -> None:
    headers = {"Content-Type": "application/json"}
    params: dict[str, str] = {}
    if style == "bearer":
        headers["Authorization"] = f"Bearer {org.key}"
    elif style == "query":
        params["key"] = org.key
    else:
        headers[style] = org.key
    body = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}],"generationConfig":{"temperature":0.3}}'
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1beta/models/gemini-flash:streamGenerateContent",
                               params={"alt": "sse", **params}, content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        rec = assert_forwarded(fake, org, family="gemini", model="gemini-flash",
                               path=f"/v1beta/models/{org.slug('gemini-flash')}:streamGenerateContent")
        assert rec.query == {"alt": "sse"} and rec.body == body
        fake.reset()
        chat = await http.post(f"{gateway}/v1/chat/completions", params=params, headers=headers,
                               json={"model": "gpt-chat", "messages": []})
    assert chat.status_code == 200, chat.text
    assert_forwarded(fake, org, family="openai", path="/v1/chat/completions", model="gpt-chat")


async def test_multipart_rewrites_only_the_model_field(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    # File bytes that look like multipart syntax must survive untouched.
    image = b"\x89PNG\r\n\x1a\n--not-a-boundary\r\n\r\n" + bytes(range(256)) * 8
    fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
        ("prompt", "a red hat \u2713"), ("model", "image-gen"), ("image", ("hat.png", image, "image/png")),
        ("mask", ("mask.png", image[::-1], "image/png")), ("x_unknown", "kept"), ("n", "1"),
    ]
    body, ctype = multipart.build(fields)
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1/images/edits", content=body,
                               headers={"Authorization": f"Bearer {org.key}", "Content-Type": ctype})
    assert resp.status_code == 200, resp.text
    rec = assert_forwarded(fake, org, family="openai", path="/v1/images/edits", model="image-gen")
    sent, got = multipart.parse(body, ctype), rec.form()
    assert [p.name for p in got] == [p.name for p in sent]
    for before, after in zip(sent, got, strict=True):
        if before.name == "model":
            assert after.data == org.slug("image-gen").encode()
        else:
            assert (after.headers, after.data) == (before.headers, before.data)


async def test_vllm_slug_with_slash_is_sent_verbatim(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    body = b'{"model" :  "llama","messages":[{"role":"user","content":"x"}],"guided_json":{"type":"object"}}'
    async with httpx.AsyncClient(timeout=20) as http:
        resp = await http.post(f"{gateway}/v1/vllm/chat/completions", content=body,
                               headers={"Authorization": f"Bearer {org.key}", "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.text
    rec = assert_forwarded(fake, org, family="vllm", path="/v1/chat/completions", model="llama")
    assert rec.body == _spliced(body, "llama", "meta-llama/Llama-3.1-8B-Instruct")
