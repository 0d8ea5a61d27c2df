"""Every auth style; keys refused offline when malformed; rejections in each family's shape."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from odock import keyformat
from odock.v1 import keys_pb2
from tests.data_plane.helpers import CHAT_MODEL, FAMILIES, assert_error, chat_call, send
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, unique_name


def resolve_key_calls(dp: DataPlaneProcess) -> int:
    rpc = dp.status()["rpc"]
    assert isinstance(rpc, dict)
    return int(rpc.get("ResolveKey", 0))


@pytest.mark.parametrize("style", ["bearer", "x-api-key", "x-goog-api-key", "query"])
async def test_every_auth_style_reaches_upstream_without_the_virtual_key(
    dp: DataPlaneProcess, org: Provisioned, fake_provider: FakeProvider, style: str
) -> None:
    async with httpx.AsyncClient(base_url=dp.url) as client:
        for family in FAMILIES:
            call = chat_call(family, CHAT_MODEL[family])
            path, headers = call.path, dict(call.headers)
            if style == "bearer":
                headers["Authorization"] = f"Bearer {org.key}"
            elif style == "query":
                path += ("&" if "?" in path else "?") + f"key={org.key}"
            else:
                headers[style] = org.key
            resp = await client.post(path, content=call.body, headers=headers)
            assert resp.status_code == 200, (family, resp.text)
            rec = fake_provider.last()
            assert rec.family == family
            assert org.key not in rec.raw_path
            assert all(org.key not in v for v in rec.headers.values())
            assert org.key.encode() not in rec.body
            assert "key" not in rec.query


@pytest.mark.parametrize("family", FAMILIES)
async def test_malformed_or_missing_key_is_refused_without_any_control_plane_call(
    dp: DataPlaneProcess, org: Provisioned, family: str
) -> None:
    good = org.key
    bad_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    before = resolve_key_calls(dp)
    async with httpx.AsyncClient(base_url=dp.url) as client:
        call = chat_call(family, CHAT_MODEL[family])
        for presented in ("odk-short", bad_checksum, "sk-" + "x" * 60, good + "x", "odk-" + "\u00e9" * 49):
            headers = {k.encode(): v.encode() for k, v in call.headers.items()}
            headers[b"x-api-key"] = presented.encode()
            resp = await client.post(call.path, content=call.body, headers=headers)
            assert_error(family, resp, 401, "invalid_api_key")
            assert presented not in resp.text
        resp = await send(client, call)
        assert_error(family, resp, 401, "missing_api_key")
        resp = await send(client, call, Authorization="Basic dXNlcjpwYXNz")
        assert_error(family, resp, 401, "invalid_api_key")
    assert resolve_key_calls(dp) == before


async def test_unknown_key_is_401_and_briefly_negatively_cached(
    dp: DataPlaneProcess, org: Provisioned
) -> None:
    unknown = keyformat.generate()
    call = chat_call("openai", "gpt-chat")
    async with httpx.AsyncClient(base_url=dp.url) as client:
        before = resolve_key_calls(dp)
        for _ in range(5):
            assert_error(
                "openai", await send(client, call, Authorization=f"Bearer {unknown}"), 401, "invalid_api_key"
            )
        assert resolve_key_calls(dp) == before + 1


async def test_revoked_key_is_refused_in_every_family_shape(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        key_row, key = await admin.create_key(org.org.id)
        async with httpx.AsyncClient(base_url=dp.url) as client:
            ok = await send(client, chat_call("openai", "gpt-chat", key=key))
            assert ok.status_code == 200, ok.text
            await admin.revoke_key(org.org.id, key_row.id)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                resp = await send(client, chat_call("openai", "gpt-chat", key=key))
                if resp.status_code == 401:
                    break
                await asyncio.sleep(0.02)
            for family in FAMILIES:
                resp = await send(client, chat_call(family, CHAT_MODEL[family], key=key))
                assert_error(family, resp, 401, "api_key_revoked")
                assert key not in resp.text


async def test_expired_key_is_refused(
    dp: DataPlaneProcess, cp: ControlPlaneProcess, org: Provisioned
) -> None:
    expire = Timestamp()
    expire.FromNanoseconds(time.time_ns() + 1_500_000_000)
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        req = keys_pb2.CreateVirtualKeyRequest(
            key=keys_pb2.VirtualKey(
                org_id=org.org.id, name=unique_name("exp"), all_models=True, expire_time=expire
            )
        )
        created = await admin.keys.CreateVirtualKey(req, metadata=admin.metadata)
    async with httpx.AsyncClient(base_url=dp.url) as client:
        call = chat_call("anthropic", "claude", key=created.secret)
        assert (await send(client, call)).status_code == 200
        await asyncio.sleep(max(0.0, expire.ToNanoseconds() / 1e9 - time.time()) + 0.05)
        assert_error("anthropic", await send(client, call), 401, "api_key_expired")
