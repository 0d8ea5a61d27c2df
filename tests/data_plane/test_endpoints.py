"""Every native endpoint end to end, passthrough fidelity, and the model listings the gateway answers itself."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import httpx
import openai
import pytest

from data_plane.providers import ENDPOINTS, LOCAL_ROUTES, Endpoint
from odock.v1 import common_pb2
from tests.data_plane.helpers import CHAT_MODEL, assert_error
from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner

_FAMILY: dict[int, str] = {
    common_pb2.PROVIDER_FAMILY_OPENAI: "openai",
    common_pb2.PROVIDER_FAMILY_ANTHROPIC: "anthropic",
    common_pb2.PROVIDER_FAMILY_GEMINI: "gemini",
    common_pb2.PROVIDER_FAMILY_VLLM: "vllm",
}
FILE_BYTES = b"\x00\x01binary\r\n--not-a-boundary\r\n"
PROXIED = [e for e in ENDPOINTS if (e.method, e.route) not in LOCAL_ROUTES]


def _file_field(ep: Endpoint) -> str:
    return "file" if ep.family == common_pb2.PROVIDER_FAMILY_VLLM or "/audio/" in ep.route else "image"


def _request(ep: Endpoint, model: str) -> tuple[str, bytes, dict[str, str]]:
    family = _FAMILY[ep.family]
    path = ep.route.replace("{model}", model)
    if ep.body == "multipart":
        body, ctype = multipart.build([
            ("prompt", "a hat"),
            ("model", model),
            (_file_field(ep), ("in.bin", FILE_BYTES, "application/octet-stream")),
            ("extra_unknown", "kept"),
        ])  # fmt: skip
        return path, body, {"Content-Type": ctype}
    doc: dict[str, object] = {
        "input": "x",
        "prompt": "x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "voice": "alloy",  # speech requires one
        "unknown_field": {"nested": [1, 2.5, None, "é"]},
        # client-supplied steering fields are just payload: they never change where the request goes
        "api_base": "http://127.0.0.1:1/evil",
        "base_url": "http://127.0.0.1:1/evil",
        "metadata": {"api_key": "sk-evil"},
    }
    if family == "gemini":
        doc = {
            "contents": [{"parts": [{"text": "hi"}]}],
            "unknown_field": [1],
            "api_base": "http://127.0.0.1:1",
        }
    else:
        doc = {"model": model, **doc}
    return path, json.dumps(doc, ensure_ascii=False).encode(), {"Content-Type": "application/json"}


@pytest.mark.parametrize("ep", PROXIED, ids=[f"{_FAMILY[e.family]}:{e.name}" for e in PROXIED])
async def test_every_endpoint_forwards_with_slug_key_and_untouched_payload(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, ep: Endpoint
) -> None:
    family = _FAMILY[ep.family]
    model = CHAT_MODEL[family]
    if ep.body == "multipart":
        model = "whisper" if family == "vllm" else "image-gen"
    path, body, headers = _request(ep, model)
    headers["Authorization"] = f"Bearer {org.key}"
    headers["x-custom-header"] = "passes"
    async with httpx.AsyncClient(base_url=dp.url, timeout=10) as client:
        resp = await client.post(path + "?foo=bar", content=body, headers=headers)
    assert resp.status_code == 200, resp.text[:300]
    rec = fake_provider.last()
    slug = org.slug(model)
    prefix = urlsplit(fake_provider.base_url(family)).path  # the model's base URL path
    assert rec.family == family and rec.query.get("foo") == "bar"
    assert rec.headers.get("x-custom-header") == "passes"
    assert org.key not in str(rec.headers) and org.key.encode() not in rec.body
    secret = fake_provider.secret(family)
    if family == "anthropic":
        assert rec.headers["x-api-key"] == secret and "Authorization" not in rec.headers
    elif family == "gemini":
        assert rec.headers["x-goog-api-key"] == secret and "Authorization" not in rec.headers
    else:
        assert rec.headers["Authorization"] == f"Bearer {secret}"
    if ep.body == "multipart":
        parts = {p.name: p for p in rec.form()}
        assert parts["model"].data.decode() == slug and parts["extra_unknown"].data == b"kept"
        sent = {p.name: p for p in multipart.parse(body, headers["Content-Type"])}
        file_field = _file_field(ep)
        assert parts[file_field].data == sent[file_field].data
        assert rec.path == prefix + ep.upstream_path
    elif family == "gemini":
        assert rec.body == body  # untouched byte for byte; the model is in the path
        assert rec.path == prefix + ep.upstream_path.replace("{slug}", slug)
    else:
        assert rec.body == body.replace(json.dumps(model).encode(), json.dumps(slug).encode(), 1)
        assert rec.path == prefix + ep.upstream_path


async def test_model_listings_show_what_the_key_may_use(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        _, restricted = await admin.create_key(org.org.id, models=["gpt-chat", "llama"])
    async with openai.AsyncOpenAI(api_key=org.key, base_url=dp.url + "/v1", max_retries=0) as client:
        listed = [m.id async for m in client.models.list()]  # what the OpenAI API can call
        assert listed == sorted(n for n, m in org.models.items() if m.family == common_pb2.PROVIDER_FAMILY_OPENAI)
        one = await client.models.retrieve("claude")
        assert one.id == "claude" and one.owned_by == "anthropic"
        with pytest.raises(openai.NotFoundError):
            await client.models.retrieve("no-such-model")
    async with openai.AsyncOpenAI(api_key=restricted, base_url=dp.url + "/v1", max_retries=0) as client:
        assert [m.id async for m in client.models.list()] == ["gpt-chat"]  # llama: vLLM, not opted in
        with pytest.raises(openai.PermissionDeniedError):
            await client.models.retrieve("claude")
    async with openai.AsyncOpenAI(api_key=restricted, base_url=dp.url + "/v1/vllm", max_retries=0) as vllm:
        assert [m.id async for m in vllm.models.list()] == ["llama"]
    async with httpx.AsyncClient(base_url=dp.url) as client:
        assert_error("vllm", await client.get("/v1/vllm/models"), 401, "missing_api_key")
        resp = await client.get("/v1/models/" + "x" * 5000, headers={"x-api-key": org.key})
        assert_error("openai", resp, 404, "model_not_found")


async def test_every_response_carries_a_request_id(dp: DataPlaneProcess, org: Provisioned) -> None:
    async with httpx.AsyncClient(base_url=dp.url) as client:
        call_headers = {"Authorization": f"Bearer {org.key}"}
        body = {"model": "gpt-chat", "messages": [{"role": "user", "content": "hi"}]}
        kept = await client.post(
            "/v1/chat/completions", json=body, headers={**call_headers, "x-request-id": "abc-123:x.y_z"}
        )
        assert kept.status_code == 200 and kept.headers["x-request-id"] == "abc-123:x.y_z"
        for bad in ("has space", "x" * 129, "semi;colon"):
            resp = await client.post(
                "/v1/chat/completions", json=body, headers={**call_headers, "x-request-id": bad}
            )
            assert resp.headers["x-request-id"].startswith("req_") and bad not in resp.headers["x-request-id"]
        ids = set()
        for resp in (
            await client.get("/healthz"),
            await client.get("/readyz"),
            await client.get("/nowhere"),
            await client.post("/v1/messages", content=b"{}"),
        ):
            ids.add(resp.headers["x-request-id"])
        assert len(ids) == 4


async def test_hop_by_hop_and_client_credential_headers_stay_behind(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider
) -> None:
    headers = {
        "x-api-key": org.key,
        "Connection": "keep-alive, x-hop",
        "x-hop": "1",
        "Proxy-Authorization": "Basic abc",
        "Cookie": "session=1",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "tools-2024-04-04",
    }
    body = {"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=dp.url) as client:
        assert (await client.post("/v1/messages", json=body, headers=headers)).status_code == 200
    got = fake_provider.last().headers
    assert got["x-api-key"] == fake_provider.secret("anthropic")
    assert got["anthropic-version"] == "2023-06-01" and got["anthropic-beta"] == "tools-2024-04-04"
    for name in ("x-hop", "Proxy-Authorization", "Cookie", "Authorization", "x-goog-api-key"):
        assert name not in got, name
