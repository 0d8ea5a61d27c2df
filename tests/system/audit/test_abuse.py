"""Hostile and sloppy clients: wrong methods and paths, odd bodies, auth in odd places.

Nothing refused may reach the provider; every refusal is in the family's shape.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.audit.shapes import FAMILY_ROUTES, chat_body, error_code
from tests.system.e2e.rawhttp import request


@pytest.mark.parametrize(("family", "method", "path"), [
    ("openai", "GET", "/v1/chat/completions"),
    ("openai", "POST", "/v1/models"),
    ("anthropic", "PUT", "/v1/messages"),
    ("gemini", "GET", "/v1beta/models/gemini-flash:generateContent"),
    ("vllm", "DELETE", "/v1/vllm/embeddings"),
    ("vllm", "POST", "/v1/vllm/models"),
])  # fmt: skip
async def test_wrong_method_is_405_in_family_shape(
    gateway: str, org: Provisioned, fake: FakeProvider, family: str, method: str, path: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.request(method, gateway + path, headers={"Authorization": f"Bearer {org.key}"})
    assert resp.status_code == 405
    assert error_code(family, 405, resp.json()) == "method_not_allowed"
    assert fake.requests == []


@pytest.mark.parametrize(("family", "path"), [
    ("openai", "/v1/chat/completions/"),
    ("openai", "/v1/audio/voices"),  # /v1/audio/speech exists since issue 15
    ("anthropic", "/v1/messages/count_tokens"),
    ("gemini", "/v1beta/models/gemini-flash:countTokens"),
    ("gemini", "/v1beta/tunedModels/gemini-flash"),  # POST /v1beta/models/{model}: 405 (test_listings)
    ("vllm", "/v1/vllm/v1/chat/completions"),
])  # fmt: skip
async def test_unknown_path_is_404_in_family_shape(
    gateway: str, org: Provisioned, fake: FakeProvider, family: str, path: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(gateway + path, json={}, headers={"Authorization": f"Bearer {org.key}"})
    assert resp.status_code == 404
    assert error_code(family, 404, resp.json()) == "not_found"
    assert fake.requests == []


@pytest.mark.parametrize(("body", "status", "code"), [
    (b'{"model": 5, "messages": []}', 400, "invalid_model"),
    (b'{"model": ["gpt-chat"], "messages": []}', 400, "invalid_model"),
    (b'{"model": {"name": "gpt-chat"}, "messages": []}', 400, "invalid_model"),
    (b'{"model": null, "messages": []}', 400, "missing_model"),
    (b'{"model": "", "messages": []}', 404, "model_not_found"),
    (b'{"model": "\\u6a21\\u578b", "messages": []}', 404, "model_not_found"),
    (b'{"model": "gpt-chat", "stream": "yes", "messages": []}', 400, "invalid_stream"),
    (b'{"model": "gpt-chat", "model": "claude", "messages": []}', 400, "duplicate_key"),
    (b'{"model": "gpt-chat", "messages": []} trailing', 400, "invalid_json"),
    (b'"gpt-chat"', 400, "invalid_json"),
    (b"null", 400, "invalid_json"),
    (b"\xff\xfe{}", 400, "invalid_json"),
])  # fmt: skip
async def test_odd_bodies_are_refused_before_the_provider(
    gateway: str, org: Provisioned, fake: FakeProvider, body: bytes, status: int, code: str
) -> None:
    for family in ("openai", "vllm"):
        path = FAMILY_ROUTES[family]
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(
                gateway + path,
                content=body.replace(b"gpt-chat", b"llama") if family == "vllm" else body,
                headers={"Authorization": f"Bearer {org.key}"},
            )
        assert resp.status_code == status, resp.text
        assert error_code(family, status, resp.json()) == code
    assert fake.requests == []


async def test_json_body_with_any_content_type_is_forwarded(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES["openai"],
            content=json.dumps(chat_body("openai")),
            headers={"Authorization": f"Bearer {org.key}", "Content-Type": "text/plain"},
        )
    assert resp.status_code == 200 and len(fake.requests) == 1


async def test_chunked_body_without_content_length_is_served(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        yield b'{"model": "claude", "max_tokens": 8,'
        yield b' "messages": [{"role": "user", "content": "hi"}]}'

    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(gateway + "/v1/messages", content=pieces(), headers={"x-api-key": org.key})
    assert resp.status_code == 200, resp.text
    assert fake.last().json()["model"] == org.slug("claude")


@pytest.mark.parametrize("style", ["bearer", "x-api-key", "x-goog-api-key", "query"])
@pytest.mark.parametrize("family", list(FAMILY_ROUTES))
async def test_every_auth_style_on_every_family(
    gateway: str, org: Provisioned, fake: FakeProvider, style: str, family: str
) -> None:
    headers = {
        "bearer": {"Authorization": f"Bearer {org.key}"},
        "x-api-key": {"x-api-key": org.key},
        "x-goog-api-key": {"x-goog-api-key": org.key},
        "query": {},
    }[style]
    query = f"?key={org.key}" if style == "query" else ""
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES[family] + query, json=chat_body(family), headers=headers
        )
    assert resp.status_code == 200, resp.text
    rec = fake.last()
    assert org.key not in rec.raw_path and "key" not in rec.query
    assert all(org.key not in v for v in rec.headers.values())


async def test_header_key_wins_over_query_key(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES["gemini"] + f"?key={org.key}",
            json=chat_body("gemini"),
            headers={"x-goog-api-key": "odk-not-a-key"},
        )
    assert resp.status_code == 401 and error_code("gemini", 401, resp.json()) == "invalid_api_key"
    assert fake.requests == []


async def test_two_authorization_headers_use_the_first(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    body = json.dumps(chat_body("openai")).encode()
    raw = f"Bearer odk-bogus\r\nAuthorization: Bearer {org.key}"  # a second header line, same name
    resp = await request(
        gateway,
        "POST",
        FAMILY_ROUTES["openai"],
        {"Content-Type": "application/json", "Authorization": raw},
        body,
    )
    assert resp.status == 401 and error_code("openai", 401, resp.json()) == "invalid_api_key"
    assert fake.requests == []


@pytest.mark.parametrize(("status", "body", "ctype"), [
    (401, b'{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}',
     "application/json"),
    (500, b"<html><body>upstream exploded</body></html>", "text/html"),
])  # fmt: skip
async def test_provider_errors_pass_through_with_status_and_body(
    gateway: str, org: Provisioned, fake: FakeProvider, status: int, body: bytes, ctype: str
) -> None:
    fake.knobs.status, fake.knobs.error_body, fake.knobs.error_content_type = status, body, ctype
    fake.knobs.extra_headers = {"x-request-id": "upstream-123"}
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES["openai"],
            json=chat_body("openai"),
            headers={"Authorization": f"Bearer {org.key}"},
        )
    assert resp.status_code == status and resp.content == body
    assert resp.headers["content-type"].startswith(ctype)
    assert resp.headers["x-upstream-request-id"] == "upstream-123"
    assert resp.headers["x-request-id"] != "upstream-123"


async def test_sdk_retries_a_provider_429_and_sees_retry_after(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    fake.knobs.status = 429
    fake.knobs.extra_headers = {"retry-after-ms": "5", "retry-after": "0"}
    client = openai.AsyncOpenAI(api_key=org.key, base_url=gateway + "/v1", max_retries=2, timeout=20)
    async with client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(
                model="gpt-chat", messages=[{"role": "user", "content": "x"}]
            )
    assert len(fake.requests) == 3  # the first try and two retries all reached the provider
    assert caught.value.response.headers["retry-after-ms"] == "5"
