"""Seed rules through the SDKs: disabled/deleted models, expired keys, deleted orgs, other orgs, limits."""

from __future__ import annotations

import asyncio
import datetime
import time

import httpx
import openai
import pytest
from google.genai import errors as genai_errors
from google.protobuf import field_mask_pb2, timestamp_pb2

from odock.v1 import common_pb2, keys_pb2, models_pb2, orgs_pb2
from tests.fakes.provider import FakeProvider
from tests.support.provision import STANDARD_MODELS, Provisioned, Provisioner, provision_org
from tests.system.audit.shapes import FAMILY_ROUTES, chat_body, error_code
from tests.system.e2e.clients import gemini_client, openai_client

MSGS: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
SETTLE = 0.5  # a watch event reaches the node well within this


async def _post(gateway: str, key: str, family: str, model: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            gateway + FAMILY_ROUTES[family],
            json=chat_body(family, model),
            headers={"Authorization": f"Bearer {key}"},
        )


async def _set_enabled(admin: Provisioner, org_id: str, name: str, enabled: bool) -> None:
    model = models_pb2.Model(org_id=org_id, name=name, enabled=enabled)
    await admin.models.UpdateModel(
        models_pb2.UpdateModelRequest(model=model, update_mask=field_mask_pb2.FieldMask(paths=["enabled"])),
        metadata=admin.metadata,
    )


async def test_disabled_model_is_a_404_everywhere_until_enabled(
    gateway: str, org: Provisioned, fake: FakeProvider, admin: Provisioner
) -> None:
    await _set_enabled(admin, org.org.id, "gemini-flash", False)
    try:
        await asyncio.sleep(SETTLE)
        with pytest.raises(genai_errors.ClientError) as caught:
            await gemini_client(gateway, org.key).aio.models.generate_content(
                model="gemini-flash", contents="x"
            )
        assert caught.value.code == 404 and caught.value.status == "NOT_FOUND"
        async with openai_client(gateway, org.key) as client:
            assert "gemini-flash" not in [m.id async for m in client.models.list()]
            with pytest.raises(openai.NotFoundError):
                await client.models.retrieve("gemini-flash")
        assert fake.requests == []
    finally:
        await _set_enabled(admin, org.org.id, "gemini-flash", True)
    await asyncio.sleep(SETTLE)
    assert (await _post(gateway, org.key, "gemini")).status_code == 200


async def test_expired_key_is_401_api_key_expired(
    gateway: str, org: Provisioned, fake: FakeProvider, admin: Provisioner
) -> None:
    expiry = timestamp_pb2.Timestamp()
    expiry.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1))
    created = await admin.keys.CreateVirtualKey(
        keys_pb2.CreateVirtualKeyRequest(
            key=keys_pb2.VirtualKey(org_id=org.org.id, all_models=True, expire_time=expiry)
        ),
        metadata=admin.metadata,
    )
    assert (await _post(gateway, created.secret, "anthropic")).status_code == 200
    await asyncio.sleep(1.2)
    resp = await _post(gateway, created.secret, "anthropic")
    assert resp.status_code == 401 and error_code("anthropic", 401, resp.json()) == "api_key_expired"
    assert len(fake.requests) == 1


async def test_other_orgs_and_deleted_orgs(
    gateway: str, org: Provisioned, fake: FakeProvider, admin: Provisioner
) -> None:
    other = await provision_org(admin, fake, STANDARD_MODELS[:1], slug_suffix="-other")
    resp = await _post(gateway, other.key, "anthropic", "claude")  # exists only in the first org
    assert resp.status_code == 404 and error_code("anthropic", 404, resp.json()) == "model_not_found"
    assert (await _post(gateway, other.key, "openai")).status_code == 200
    assert fake.last().json()["model"] == other.slug("gpt-chat")
    await admin.orgs.DeleteOrg(
        orgs_pb2.DeleteOrgRequest(id=other.org.id, force=True), metadata=admin.metadata
    )
    await asyncio.sleep(SETTLE)
    fake.reset()
    resp = await _post(gateway, other.key, "openai")
    assert resp.status_code == 401 and error_code("openai", 401, resp.json()) == "invalid_api_key"
    assert fake.requests == []


async def test_rate_limit_429_in_every_family_with_retry_after(
    gateway: str, org: Provisioned, fake: FakeProvider, admin: Provisioner
) -> None:
    left = 60 - time.time() % 60  # per-minute windows are aligned on the epoch: stay inside one
    if left < 5:
        await asyncio.sleep(left + 0.1)
    created = await admin.keys.CreateVirtualKey(
        keys_pb2.CreateVirtualKeyRequest(
            key=keys_pb2.VirtualKey(
                org_id=org.org.id, all_models=True, limits=common_pb2.KeyLimits(requests_per_minute=1)
            )
        ),
        metadata=admin.metadata,
    )
    fake.knobs.extra_headers = {
        "x-ratelimit-limit-requests": "10000",
        "x-ratelimit-remaining-requests": "9999",
    }
    ok = await _post(gateway, created.secret, "openai")
    assert ok.status_code == 200
    # The gateway's own limit headers replace the provider's: one value each, the key's limit.
    assert ok.headers.get_list("x-ratelimit-limit-requests") == ["1"]
    assert ok.headers.get_list("x-ratelimit-remaining-requests") == ["0"]
    for family in FAMILY_ROUTES:
        resp = await _post(gateway, created.secret, family)
        assert resp.status_code == 429, resp.text
        assert error_code(family, 429, resp.json()) == "rate_limit_exceeded"
        wait = int(resp.headers["retry-after"])
        assert 0 < wait <= 60
        if family == "gemini":
            retry = resp.json()["error"]["details"][1]
            assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{wait}s"}
    assert len(fake.requests) == 1
    async with openai.AsyncOpenAI(api_key=created.secret, base_url=gateway + "/v1", max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model="gpt-chat", messages=MSGS)  # type: ignore[arg-type]
    assert caught.value.code == "rate_limit_exceeded"
