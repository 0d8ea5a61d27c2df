"""The same governance as everywhere on the new endpoints: authentication, key scope, the family rule,
missing models, rate limits, request ids, errors in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import (
    BODY_LIMIT,
    Surface,
    UsageReader,
    auth,
    jsonl,
    openai_error,
    raw,
)

WAV = b"RIFF0000WAVEfmt "


def _audio(model: str | None) -> tuple[bytes, str]:
    fields: list[tuple[str, str | tuple[str, bytes, str]]] = [("file", ("a.wav", WAV, "audio/wav"))]
    if model is not None:
        fields.insert(0, ("model", model))
    return multipart.build(fields)


def _calls(model: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, httpx kwargs) of one call per new model-carrying endpoint."""
    body, ctype = _audio(model)
    fields: list[tuple[str, str | tuple[str, bytes, str]]] = [("purpose", "user_data"),
                                                             ("file", ("x.txt", b"x", "text/plain"))]
    if model is not None:
        fields.append(("model", model))
    upload, up_type = multipart.build(fields)
    json_model = {"model": model} if model is not None else {}
    return [
        ("POST", "/v1/audio/transcriptions", {"content": body, "headers": {"Content-Type": ctype}}),
        ("POST", "/v1/audio/translations", {"content": body, "headers": {"Content-Type": ctype}}),
        ("POST", "/v1/audio/speech", {"json": {**json_model, "voice": "alloy", "input": "hi"}}),
        ("POST", "/v1/moderations", {"json": {**json_model, "input": "hi"}}),
        ("POST", "/v1/files", {"content": upload, "headers": {"Content-Type": up_type}}),
    ]


async def _send(http: httpx.AsyncClient, key: str, method: str, path: str, kw: dict[str, Any]) -> httpx.Response:
    headers = {**auth(key), **kw.get("headers", {})}
    return await http.request(method, path, **{**kw, "headers": headers})


@pytest.mark.parametrize("path", ["/v1/files", "/v1/batches", "/v1/files/file-x", "/v1/batches/batch_x"])
async def test_unknown_key_is_401_in_openai_shape(gateway: str, fake: FakeProvider, path: str) -> None:
    async with raw(gateway) as http:
        resp = await http.get(path, headers=auth("odk-not-a-real-key"))
        missing = await http.get(path)
    assert resp.status_code == missing.status_code == 401
    assert openai_error(resp)["code"] == "invalid_api_key" and openai_error(missing)["code"] == "missing_api_key"
    assert fake.requests == []


async def test_key_scope_on_every_new_endpoint(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    key = await org_a.key_for(["gpt-chat"])
    async with raw(gateway) as http:
        for method, path, kw in _calls("whisper-gw"):
            resp = await _send(http, key, method, path, kw)
            assert resp.status_code == 403, (path, resp.text)
            err = openai_error(resp)
            assert err["code"] == "model_not_allowed" and err["type"] == "permission_error", path
            assert resp.headers.get("x-odock-request-id"), path
    assert fake.requests == []


async def test_family_rule_on_every_new_endpoint(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    async with raw(gateway) as http:
        for method, path, kw in _calls("claude"):
            resp = await _send(http, org_a.key, method, path, kw)
            assert resp.status_code == 400, (path, resp.text)
            assert openai_error(resp)["code"] == "provider_not_allowed", path
    assert fake.requests == []


async def test_missing_model_on_every_new_endpoint(gateway: str, fake: FakeProvider, org_b: Surface) -> None:
    async with raw(gateway) as http:
        for method, path, kw in _calls(None):
            if path == "/v1/moderations":
                continue  # OpenAI's model is optional here (omni-moderation-latest); the org has no default
            resp = await _send(http, org_b.key, method, path, kw)
            assert resp.status_code == 400, (path, resp.text)
            assert openai_error(resp)["code"] == "missing_model", path
    assert fake.requests == []


async def test_rate_limit_counts_the_new_endpoints(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    key = await org_a.key_for(rpm=2)
    async with raw(gateway) as http:
        statuses = []
        for method, path, kw in _calls("whisper-gw")[:1] + _calls("mod-gw")[3:4] + _calls("tts-gw")[2:3]:
            resp = await _send(http, key, method, path, kw)
            statuses.append(resp.status_code)
        assert statuses == [200, 200, 429], statuses
        assert openai_error(resp)["code"] == "rate_limit_exceeded" and "retry-after" in resp.headers
    assert len(fake.requests) == 2


async def test_request_ids_and_client_request_id(gateway: str, fake: FakeProvider, org_a: Surface,
                                                 usage: UsageReader) -> None:
    body, ctype = _audio("whisper-gw")
    async with raw(gateway) as http:
        resp = await http.post("/v1/audio/transcriptions", content=body,
                               headers={**auth(org_a.key), "Content-Type": ctype, "x-request-id": "client-77"})
        listing = await http.get("/v1/files", headers=auth(org_a.key))
    assert resp.status_code == 200 and listing.status_code == 200
    rid = resp.headers["x-odock-request-id"]
    assert rid != listing.headers["x-odock-request-id"]
    rec = await usage.by_request_id(org_a.org_id, rid)
    assert rec.client_request_id == "client-77"


async def test_batch_upload_lines_name_models_not_slugs(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    """A line naming the upstream slug instead of a gateway model is refused like any unknown model."""
    body, ctype = multipart.build([("purpose", "batch"),
                                   ("file", ("in.jsonl", jsonl("gpt-chat", "gpt-4.1-mini-upstream"), "x"))])
    async with raw(gateway) as http:
        resp = await http.post("/v1/files", content=body, headers={**auth(org_a.key), "Content-Type": ctype})
    assert resp.status_code in (400, 404), resp.text
    assert "Line 2" in openai_error(resp)["message"]
    assert fake.requests == []


@pytest.mark.parametrize("path", ["/v1/audio/speech", "/v1/moderations", "/v1/batches"])
async def test_json_bodies_over_the_body_limit_are_413(gateway: str, fake: FakeProvider, org_a: Surface,
                                                       path: str) -> None:
    big = {"model": "tts-gw", "voice": "alloy", "input": "x" * BODY_LIMIT}
    async with raw(gateway) as http:
        resp = await http.post(path, json=big, headers=auth(org_a.key))
    assert resp.status_code == 413 and openai_error(resp)["code"] == "request_too_large", resp.text[:300]
    assert fake.requests == []
