"""Requests aiohttp's HTTP parser refuses still get the endpoint family's JSON error shape.

Request lines and header fields over 8190 bytes, more than 128 headers, and a request head that
does not arrive in time are refused before any handler runs; the answer must still parse in the
family's SDK, carry an x-request-id, close the connection, and never echo the request (a ?key=
in the line must not come back).
"""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from google.genai import errors as genai_errors

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioned
from tests.system.audit.shapes import FAMILY_ROUTES, error_code
from tests.system.e2e.clients import gemini_client, openai_client
from tests.system.e2e.rawhttp import RawResponse, read_response, request

LONG = 9000  # over aiohttp's 8190-byte line and field limits


def _assert_refused(family: str, resp: RawResponse, code: str, key: str) -> None:
    assert resp.status == 400, resp
    assert resp.headers["content-type"].startswith("application/json"), resp.headers
    assert resp.headers["x-request-id"].startswith("req_")
    assert error_code(family, 400, json.loads(resp.body)) == code
    assert key not in resp.body.decode() and len(resp.body) < 300


@pytest.mark.parametrize("family", list(FAMILY_ROUTES))
async def test_request_line_too_long_is_family_json(
    gateway: str, org: Provisioned, fake: FakeProvider, family: str
) -> None:
    target = FAMILY_ROUTES[family] + f"?key={org.key}&pad=" + "p" * LONG
    resp = await request(gateway, "POST", target, {"Content-Type": "application/json"}, b"{}")
    _assert_refused(family, resp, "uri_too_long", org.key)
    assert fake.requests == []


async def test_gemini_sdk_with_a_huge_model_name_gets_a_client_error(gateway: str, org: Provisioned) -> None:
    with pytest.raises(genai_errors.ClientError) as caught:
        await gemini_client(gateway, org.key).aio.models.generate_content(model="m" * LONG, contents="hi")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    assert caught.value.message == "Request line too long"


@pytest.mark.parametrize("family", list(FAMILY_ROUTES))
async def test_header_too_large_is_family_json(gateway: str, org: Provisioned, family: str) -> None:
    headers = {"Authorization": f"Bearer {org.key}", "x-big": "b" * LONG}
    resp = await request(gateway, "POST", FAMILY_ROUTES[family], headers, b"{}")
    _assert_refused(family, resp, "header_too_large", org.key)


async def test_openai_sdk_with_a_huge_header_gets_bad_request(gateway: str, org: Provisioned) -> None:
    async with openai_client(gateway, org.key) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(
                model="gpt-chat",
                messages=[{"role": "user", "content": "x"}],
                extra_headers={"x-big": "b" * LONG},
            )
    assert caught.value.status_code == 400 and caught.value.code == "header_too_large"


@pytest.mark.parametrize("family", ["anthropic", "gemini"])
async def test_too_many_headers_is_family_json(gateway: str, org: Provisioned, family: str) -> None:
    headers = {f"x-h{i}": "v" for i in range(200)} | {"x-api-key": org.key}
    resp = await request(gateway, "POST", FAMILY_ROUTES[family], headers, b"{}")
    _assert_refused(family, resp, "too_many_headers", org.key)


async def test_header_timeout_is_a_408_in_the_family_shape(dp: DataPlaneProcess, gateway: str) -> None:
    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1beta/models/gemini-flash:generateContent HTTP/1.1\r\nHost: x\r\n"
        )  # never ends
        await writer.drain()
        resp = await asyncio.wait_for(read_response(reader), 5)
    finally:
        writer.close()
    assert resp.status == 408 and resp.headers["content-type"] == "application/json"
    assert error_code("gemini", 408, json.loads(resp.body)) == "request_timeout"


async def test_the_node_keeps_serving_after_refusals(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    for _ in range(3):
        await request(gateway, "GET", "/v1/models?pad=" + "p" * LONG)
    async with openai_client(gateway, org.key) as client:
        done = await client.chat.completions.create(
            model="gpt-chat", messages=[{"role": "user", "content": "x"}]
        )
    assert done.choices[0].message.content
    assert len(fake.requests) == 1


async def test_a_huge_header_with_a_large_body_still_gets_its_answer(gateway: str, org: Provisioned) -> None:
    """The answer is written while the client is still sending its body: closing at once would
    reset the connection under the unread bytes, and the client would see a reset, not the 400."""
    async with openai_client(gateway, org.key) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.with_options(max_retries=0).chat.completions.create(
                model="gpt-chat",
                messages=[{"role": "user", "content": "x" * (4 * 1024 * 1024)}],
                extra_headers={"x-big": "b" * LONG},
            )
    assert caught.value.status_code == 400 and caught.value.code == "header_too_large"
