"""Body limit (413, before buffering, chunked too) and x-request-id on every response."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.e2e import rawhttp
from tests.system.e2e.conftest import MAX_BODY_BYTES
from tests.system.e2e.errors_sdk import check

ROUTES = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages",
          "gemini": "/v1beta/models/gemini-flash:generateContent", "vllm": "/v1/vllm/chat/completions"}


async def _exchange(gateway: str, head: list[str], chunks: list[bytes]) -> rawhttp.RawResponse:
    """Send a request head and body pieces, tolerating the server cutting the upload short."""
    url = urlsplit(gateway)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(("\r\n".join([*head, f"Host: {url.netloc}", "Connection: close"]) + "\r\n\r\n").encode())
        for chunk in chunks:
            try:
                writer.write(chunk)
                await writer.drain()
            except ConnectionError:
                break
        return await asyncio.wait_for(rawhttp.read_response(reader), 10)
    finally:
        writer.close()


def _shape(family: str, resp: rawhttp.RawResponse) -> str:
    body = resp.json()
    if family == "anthropic":
        assert body["type"] == "error"
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    return message


@pytest.mark.parametrize("family", list(ROUTES))
async def test_declared_oversized_body_is_refused_before_it_is_sent(gateway: str, org: Provisioned,
                                                                    fake: FakeProvider, family: str) -> None:
    head = [f"POST {ROUTES[family]} HTTP/1.1", f"Authorization: Bearer {org.key}",
            "Content-Type: application/json", f"Content-Length: {MAX_BODY_BYTES + 1}"]
    resp = await _exchange(gateway, head, [])  # not one body byte: the answer must not wait for it
    assert resp.status == 413
    _shape(family, resp)
    assert fake.requests == []


@pytest.mark.parametrize("family", list(ROUTES))
async def test_chunked_oversized_body_is_413(gateway: str, org: Provisioned, fake: FakeProvider, family: str) -> None:
    piece = b"x" * 65536
    chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
    count = MAX_BODY_BYTES // len(piece) + 2
    head = [f"POST {ROUTES[family]} HTTP/1.1", f"x-api-key: {org.key}", "Content-Type: application/json",
            "Transfer-Encoding: chunked"]
    resp = await _exchange(gateway, head, [chunk] * count + [b"0\r\n\r\n"])
    assert resp.status == 413
    _shape(family, resp)
    assert fake.requests == []


async def test_sdk_sees_413_as_its_own_class(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    from tests.system.e2e.clients import anthropic_client, openai_client

    big = "y" * (MAX_BODY_BYTES + 10)
    async with openai_client(gateway, org.key) as oc:
        try:
            await oc.chat.completions.create(model="gpt-chat", messages=[{"role": "user", "content": big}])
        except Exception as exc:  # noqa: BLE001
            check("openai", exc, 413)
        else:
            raise AssertionError("no 413")
    async with anthropic_client(gateway, org.key) as ac:
        try:
            await ac.messages.create(model="claude", max_tokens=1, messages=[{"role": "user", "content": big}])
        except Exception as exc:  # noqa: BLE001
            check("anthropic", exc, 413)
        else:
            raise AssertionError("no 413")
    assert fake.requests == []


async def test_request_id_kept_when_well_formed_else_generated(gateway: str, org: Provisioned,
                                                              fake: FakeProvider) -> None:
    auth = {"Authorization": f"Bearer {org.key}"}
    body = {"model": "gpt-chat", "messages": []}
    async with httpx.AsyncClient(timeout=20) as http:
        kept = await http.post(f"{gateway}/v1/chat/completions", json=body, headers={**auth, "x-request-id": "abc-123"})
        fresh = await http.post(f"{gateway}/v1/chat/completions", json=body,
                                headers={**auth, "x-request-id": "bad id\twith spaces" + "z" * 300})
        err = await http.post(f"{gateway}/v1/chat/completions", json=body, headers={"x-request-id": "e-1"})
        other = await http.post(f"{gateway}/v1/chat/completions", json=body, headers=auth)
    assert kept.status_code == 200 and kept.headers["x-request-id"] == "abc-123"
    assert fresh.status_code == 200 and "bad id" not in fresh.headers["x-request-id"]
    assert re.fullmatch(r"[A-Za-z0-9._:-]{8,128}", fresh.headers["x-request-id"])
    assert err.status_code == 401 and err.headers["x-request-id"] == "e-1"
    assert other.headers["x-request-id"] not in (fresh.headers["x-request-id"], "")
