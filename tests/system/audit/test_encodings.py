"""Request encodings and odd input the audit found mishandled: gzip bodies, non-UTF-8 keys, 405 Allow, message grammar."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.audit.shapes import FAMILY_ROUTES, chat_body, error_code
from tests.system.e2e.rawhttp import request


async def test_gzip_request_body_reaches_the_provider_decoded_without_the_header(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    body = json.dumps(chat_body("openai")).encode()
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES["openai"],
            content=gzip.compress(body),
            headers={
                "Authorization": f"Bearer {org.key}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        )
    assert resp.status_code == 200, resp.text
    rec = fake.last()
    assert "content-encoding" not in {h.lower() for h in rec.headers}
    assert rec.json()["messages"] == chat_body("openai")["messages"]


@pytest.mark.parametrize("family", ["openai", "anthropic"])
async def test_corrupt_gzip_body_is_a_400_not_a_500(
    gateway: str, org: Provisioned, fake: FakeProvider, family: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + FAMILY_ROUTES[family],
            content=b"definitely not gzip",
            headers={"Authorization": f"Bearer {org.key}", "Content-Encoding": "gzip"},
        )
    assert resp.status_code == 400, resp.text
    error_code(family, 400, resp.json())
    assert fake.requests == []


@pytest.mark.parametrize(
    ("family", "header"),
    [("openai", "Authorization: Bearer "), ("anthropic", "x-api-key: "), ("gemini", "x-goog-api-key: ")],
)
async def test_non_utf8_key_header_is_401_not_500(
    gateway: str, fake: FakeProvider, family: str, header: str
) -> None:
    import asyncio

    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {FAMILY_ROUTES[family]} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode()
        + header.encode()
        + b"odk-\xe9\xff\r\nContent-Length: 2\r\n\r\n{}"
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), head
    assert error_code(family, 401, json.loads(body)) == "invalid_api_key"
    assert fake.requests == []


async def test_405_names_the_allowed_methods(gateway: str, org: Provisioned) -> None:
    resp = await request(gateway, "GET", "/v1/chat/completions", {"Authorization": f"Bearer {org.key}"})
    assert resp.status == 405
    assert resp.headers.get("allow") == "POST"


async def test_provider_not_allowed_message_reads_well(gateway: str, org: Provisioned) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + "/v1/chat/completions",
            json=chat_body("openai", "claude"),
            headers={"Authorization": f"Bearer {org.key}"},
        )
    assert resp.status_code == 400
    assert "an anthropic model" in resp.json()["error"]["message"]
