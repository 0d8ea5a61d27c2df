"""Model listings through the official SDKs, wrong methods naming what is allowed, and 100-continue.

``client.models.list()`` / ``retrieve`` / ``get`` of the Anthropic, google-genai and OpenAI SDKs
against the gateway: each gets its own family's models (only those the key may use), in its own
shape, paginated as the provider paginates, with errors its SDK raises as usual.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio
from google.genai import errors as genai_errors
from google.protobuf import field_mask_pb2

from odock.v1 import models_pb2
from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import ModelSpec, Provisioner, provision_org
from tests.system.audit.conftest import MAX_BODY_BYTES
from tests.system.audit.shapes import error_code
from tests.system.e2e.clients import anthropic_client, gemini_client, openai_client
from tests.system.e2e.rawhttp import parse

CLAUDES = ("claude-a", "claude-b", "claude-c", "claude-d", "claude-e")
GEMINIS = ("gem-a", "gem-b", "gem-c")
SPECS = (
    *(ModelSpec(n, "anthropic", f"{n}-up") for n in (*CLAUDES, "claude-off")),
    *(ModelSpec(n, "gemini", f"{n}-up") for n in GEMINIS),
    ModelSpec("gpt-x", "openai", "gpt-x-up"),
)
ALLOWED = ("claude-b", "gem-b", "gpt-x")  # the restricted key's models
BAD_KEY = "odk-" + "A" * 49  # well-formed length, bad checksum: refused offline


@dataclass(frozen=True)
class Catalog:
    """An org with several models per family, one disabled, one gemini model callable the OpenAI
    way (openai_compatible), an all-models and a restricted key."""

    key: str
    restricted: str


@pytest_asyncio.fixture(scope="module", loop_scope="package")
async def catalog(cp: ControlPlaneProcess, fake: FakeProvider) -> Catalog:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = await provision_org(admin, fake, SPECS)
        off = models_pb2.Model(org_id=org.org.id, name="claude-off", enabled=False)
        await admin.models.UpdateModel(
            models_pb2.UpdateModelRequest(model=off, update_mask=field_mask_pb2.FieldMask(paths=["enabled"])),
            metadata=admin.metadata,
        )
        callable_ = models_pb2.Model(org_id=org.org.id, name="gem-b", openai_compatible=True)
        await admin.models.UpdateModel(
            models_pb2.UpdateModelRequest(
                model=callable_, update_mask=field_mask_pb2.FieldMask(paths=["openai_compatible"])
            ),
            metadata=admin.metadata,
        )
        _, restricted = await admin.create_key(org.org.id, models=list(ALLOWED))
    return Catalog(key=org.key, restricted=restricted)


def _body(exc: anthropic.APIStatusError) -> Any:
    return exc.body


async def _get(gateway: str, path: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(gateway + path, headers=headers)


# --- Anthropic ---------------------------------------------------------------------------


async def test_anthropic_list_and_retrieve(gateway: str, catalog: Catalog) -> None:
    async with anthropic_client(gateway, catalog.key) as client:
        listed = [m async for m in client.models.list()]
        one = await client.models.retrieve("claude-c")
        with pytest.raises(anthropic.NotFoundError) as other_family:
            await client.models.retrieve("gem-a")
        with pytest.raises(anthropic.NotFoundError) as disabled:
            await client.models.retrieve("claude-off")
    assert sorted(m.id for m in listed) == sorted(CLAUDES)  # anthropic family only, no disabled model
    assert all(m.type == "model" and m.display_name == m.id for m in listed)
    created = [m.created_at for m in listed]
    assert created == sorted(created, reverse=True)  # newest first, as Anthropic lists
    assert one.id == "claude-c" and one.type == "model" and isinstance(one.created_at, datetime)
    assert one.created_at.tzinfo is not None and one.lifecycle == "active"
    for caught in (other_family, disabled):
        assert error_code("anthropic", 404, caught.value.body) == "model_not_found"
        assert _body(caught.value)["error"]["type"] == "not_found_error"


async def test_anthropic_pagination(gateway: str, catalog: Catalog) -> None:
    async with anthropic_client(gateway, catalog.key) as client:
        full = await client.models.list(limit=1000)
        ids = [m.id for m in full.data]
        first = await client.models.list(limit=2)
        walked = [m.id async for m in client.models.list(limit=2)]  # the SDK follows after_id
        after = await client.models.list(limit=2, after_id=ids[2])
        before = await client.models.list(limit=2, before_id=ids[3])
        start = await client.models.list(limit=2, before_id=ids[1])
        retired = await client.models.list(lifecycle=["retired"])
        active = await client.models.list(lifecycle=["active", "deprecated"])
        errors = []
        for params in ({"limit": 0}, {"limit": 1001}, {"after_id": "nope"},
                       {"after_id": ids[0], "before_id": ids[1]}):  # fmt: skip
            with pytest.raises(anthropic.BadRequestError) as caught:
                await client.models.list(**params)
            errors.append(error_code("anthropic", 400, caught.value.body))
    assert (
        len(ids) == len(CLAUDES) and not full.has_more and (full.first_id, full.last_id) == (ids[0], ids[-1])
    )
    assert [m.id for m in first.data] == ids[:2] and first.has_more and first.last_id == ids[1]
    assert walked == ids
    assert [m.id for m in after.data] == ids[3:5] and not after.has_more
    assert [m.id for m in before.data] == ids[1:3] and before.has_more and before.first_id == ids[1]
    assert [m.id for m in start.data] == ids[:1] and not start.has_more
    assert retired.data == [] and retired.first_id is None and retired.last_id is None
    assert [m.id for m in active.data] == ids
    assert errors == ["invalid_parameter"] * 4


async def test_anthropic_lists_only_what_the_key_may_use(gateway: str, catalog: Catalog) -> None:
    async with anthropic_client(gateway, catalog.restricted) as client:
        listed = [m.id async for m in client.models.list()]
        with pytest.raises(anthropic.PermissionDeniedError) as denied:
            await client.models.retrieve("claude-a")
    assert listed == ["claude-b"]
    assert error_code("anthropic", 403, denied.value.body) == "model_not_allowed"


async def test_anthropic_unauthenticated_is_an_anthropic_error(gateway: str) -> None:
    async with anthropic_client(gateway, BAD_KEY) as client:
        with pytest.raises(anthropic.AuthenticationError) as listing:
            await client.models.list()
        with pytest.raises(anthropic.AuthenticationError) as retrieving:
            await client.models.retrieve("claude-a")
    for caught in (listing, retrieving):
        assert error_code("anthropic", 401, caught.value.body) == "invalid_api_key"
        assert _body(caught.value)["error"]["type"] == "authentication_error"


# --- OpenAI: without anthropic-version, what the OpenAI API can call ----------------------


async def test_openai_listing_shows_what_the_openai_api_can_call(gateway: str, catalog: Catalog) -> None:
    async with openai_client(gateway, catalog.restricted) as client:
        listed = sorted([(m.id, m.owned_by) async for m in client.models.list()])
        with pytest.raises(openai.NotFoundError) as missing:
            await client.models.retrieve("claude-off")
    async with openai_client(gateway, BAD_KEY) as client:
        with pytest.raises(openai.AuthenticationError) as unauthenticated:
            await client.models.list()
    assert listed == [("gem-b", "gemini"), ("gpt-x", "openai")]  # claude-b: not openai_compatible
    assert missing.value.code == "model_not_found"
    assert (
        unauthenticated.value.code == "invalid_api_key"
        and unauthenticated.value.type == "authentication_error"
    )
    raw = await _get(gateway, "/v1/models", {"Authorization": f"Bearer {catalog.restricted}"})
    assert raw.json()["object"] == "list" and "has_more" not in raw.json()


# --- Gemini ------------------------------------------------------------------------------


async def test_genai_list_and_get(gateway: str, catalog: Catalog) -> None:
    client = gemini_client(gateway, catalog.key).aio
    pager = await client.models.list(config={"page_size": 2})
    first_page = [m.name for m in pager.page]
    names = [m.name async for m in pager]
    one = await client.models.get(model="gem-b")
    prefixed = await client.models.get(model="models/gem-c")
    errors = {}
    for model in ("gpt-x", "claude-a", "claude-off", "no-such"):
        with pytest.raises(genai_errors.ClientError) as caught:
            await client.models.get(model=model)
        errors[model] = (caught.value.code, caught.value.status)
    assert first_page == ["models/gem-a", "models/gem-b"]
    assert names == [f"models/{n}" for n in GEMINIS]
    assert one.name == "models/gem-b" and one.display_name == "gem-b"
    assert one.supported_actions == ["generateContent", "streamGenerateContent"]
    assert prefixed.name == "models/gem-c"
    assert set(errors.values()) == {(404, "NOT_FOUND")}


async def test_genai_permissions_and_auth_styles(gateway: str, catalog: Catalog) -> None:
    client = gemini_client(gateway, catalog.restricted).aio
    listed = [m.name async for m in await client.models.list()]
    with pytest.raises(genai_errors.ClientError) as denied:
        await client.models.get(model="gem-a")
    with pytest.raises(genai_errors.ClientError) as unauthenticated:
        await gemini_client(gateway, BAD_KEY).aio.models.list()
    assert listed == ["models/gem-b"]
    assert (denied.value.code, denied.value.status) == (403, "PERMISSION_DENIED")
    assert (unauthenticated.value.code, unauthenticated.value.status) == (401, "UNAUTHENTICATED")
    key = catalog.restricted
    styles = [
        await _get(gateway, "/v1beta/models", {"Authorization": f"Bearer {key}"}),
        await _get(gateway, "/v1beta/models", {"x-goog-api-key": key}),
        await _get(gateway, f"/v1beta/models?key={key}", {}),
    ]
    assert [r.status_code for r in styles] == [200] * 3
    assert all(r.json() == {"models": [styles[0].json()["models"][0]]} for r in styles)
    missing = await _get(gateway, "/v1beta/models", {})
    assert error_code("gemini", 401, missing.json()) == "missing_api_key"


async def test_genai_page_parameters(gateway: str, catalog: Catalog) -> None:
    auth = {"x-goog-api-key": catalog.key}
    clamped = await _get(gateway, "/v1beta/models?pageSize=5000", auth)
    default = await _get(gateway, "/v1beta/models?pageSize=0", auth)
    bad_token = await _get(gateway, "/v1beta/models?pageToken=%25%25", auth)
    negative = await _get(gateway, "/v1beta/models?pageSize=-1", auth)
    assert len(clamped.json()["models"]) == len(default.json()["models"]) == len(GEMINIS)
    assert "nextPageToken" not in clamped.json()
    for resp in (bad_token, negative):
        assert resp.status_code == 400 and error_code("gemini", 400, resp.json()) == "invalid_parameter"


# --- 405 names the allowed methods --------------------------------------------------------


@pytest.mark.parametrize(("family", "method", "path", "allow"), [
    ("gemini", "GET", "/v1beta/models/gem-a:generateContent", "POST"),
    ("gemini", "GET", "/v1beta/models/gem-a:streamGenerateContent", "POST"),
    ("gemini", "POST", "/v1beta/models/gem-a", "GET, HEAD"),
    ("gemini", "DELETE", "/v1beta/models", "GET, HEAD"),
    ("openai", "POST", "/v1/models", "GET, HEAD"),
    ("anthropic", "GET", "/v1/messages", "POST"),
])  # fmt: skip
async def test_405_names_the_allowed_methods(
    gateway: str, catalog: Catalog, fake: FakeProvider, family: str, method: str, path: str, allow: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.request(method, gateway + path, headers={"x-goog-api-key": catalog.key})
    assert resp.status_code == 405 and resp.headers["allow"] == allow
    assert error_code(family, 405, resp.json()) == "method_not_allowed"
    assert fake.requests == []


async def test_a_gemini_custom_method_is_not_a_model_get(gateway: str, catalog: Catalog) -> None:
    resp = await _get(gateway, "/v1beta/models/gem-a:countTokens", {"x-goog-api-key": catalog.key})
    assert resp.status_code == 404 and error_code("gemini", 404, resp.json()) == "not_found"


# --- Expect: 100-continue ----------------------------------------------------------------


async def _open(gateway: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = gateway.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


def _head(path: str, length: int, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gw", "Content-Type: application/json",
             f"Content-Length: {length}", "Expect: 100-continue", *(f"{k}: {v}" for k, v in headers.items())]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(("family", "path", "headers"), [
    ("anthropic", "/v1/messages", {"anthropic-version": "2023-06-01"}),
    ("gemini", "/v1beta/models/gem-a:generateContent", {}),
    ("openai", "/v1/chat/completions", {}),
])  # fmt: skip
async def test_oversized_expect_continue_is_refused_before_100(
    gateway: str, catalog: Catalog, fake: FakeProvider, family: str, path: str, headers: dict[str, str]
) -> None:
    reader, writer = await _open(gateway)
    try:
        writer.write(_head(path, MAX_BODY_BYTES + 1, {"x-api-key": catalog.key, **headers}))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 5)  # the gateway answers and closes; no body sent
    finally:
        writer.close()
    assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
    assert b"100 Continue" not in raw
    resp = parse(raw)
    assert resp.headers["x-request-id"].startswith("req_")
    assert error_code(family, 413, resp.json()) == "request_too_large"
    assert fake.requests == []


async def test_acceptable_expect_continue_gets_100_then_the_answer(
    gateway: str, catalog: Catalog, fake: FakeProvider
) -> None:
    body = json.dumps({"model": "claude-a", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    reader, writer = await _open(gateway)
    try:
        writer.write(_head("/v1/messages", len(body), {"x-api-key": catalog.key, "Connection": "close"}))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(body.encode())
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    resp = parse(raw)
    assert resp.status == 200, raw[:300]
    assert resp.json()["type"] == "message"
    assert len(fake.requests) == 1 and fake.last().json()["model"] == "claude-a-up"


async def test_unknown_expectation_is_417_in_the_family_shape(gateway: str, catalog: Catalog) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            gateway + "/v1beta/models/gem-a:generateContent",
            content=b"{}",
            headers={"x-goog-api-key": catalog.key, "Expect": "something-else"},
        )
    assert resp.status_code == 417 and error_code("gemini", 417, resp.json()) == "expectation_failed"
