"""This package's world: orgs whose OpenAI models sit on the fake upstream with known prices, keys,
and the control plane's usage records read back through the admin UsageService."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import openai
from google.protobuf import field_mask_pb2

from odock.v1 import common_pb2, keys_pb2, node_pb2, orgs_pb2, usage_pb2, usage_pb2_grpc
from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner

BODY_LIMIT = 2 << 20  # ODOCK_MAX_BODY_BYTES of this package's data plane
UPLOAD_LIMIT = 6 << 20  # ODOCK_MAX_UPLOAD_BYTES
BATCH_FILE_LIMIT = 1 << 20  # ODOCK_MAX_BATCH_FILE_BYTES
AUDIO_SECOND_PICOS = 100_000_000  # $0.0001 per second of audio (whisper's $0.006/min)
CHARACTER_PICOS = 15_000_000  # $15 per million characters (tts-1)
TOKEN_PRICES = common_pb2.Pricing(input_per_mtok_micros=1_000_000, output_per_mtok_micros=2_000_000)

# gateway name -> (family, upstream slug, pricing)
MODELS: dict[str, tuple[str, str, common_pb2.Pricing]] = {
    "whisper-gw": ("openai", "whisper-1", common_pb2.Pricing(per_million_audio_seconds_micros=AUDIO_SECOND_PICOS)),
    "transcribe-gw": ("openai", "gpt-4o-transcribe", TOKEN_PRICES),
    "tts-gw": ("openai", "tts-1", common_pb2.Pricing(per_million_characters_micros=CHARACTER_PICOS)),
    "tts-sse-gw": ("openai", "gpt-4o-mini-tts", TOKEN_PRICES),
    "mod-gw": ("openai", "omni-moderation-latest", common_pb2.Pricing()),
    "gpt-chat": ("openai", "gpt-4.1-mini-upstream", TOKEN_PRICES),
    "gpt-other": ("openai", "gpt-other-upstream", TOKEN_PRICES),
    "embed-gw": ("openai", "text-embedding-3-small-upstream", TOKEN_PRICES),
    "claude": ("anthropic", "claude-upstream", TOKEN_PRICES),
}


@dataclass
class Surface:
    """One org on the fake, its all-models key, and a way to make more keys."""

    admin: Provisioner
    org_id: str
    key: str
    key_id: str
    slugs: dict[str, str] = field(default_factory=dict)

    async def key_for(self, models: Sequence[str] | None = None, *, rpm: int | None = None,
                      budget_micros: int | None = None) -> str:
        """A new key of this org for ``models`` (None: all), optionally rate limited / budgeted."""
        row = keys_pb2.VirtualKey(org_id=self.org_id, name=f"k-{time.monotonic_ns()}", all_models=models is None,
                                  models=list(models or ()))
        if rpm is not None:
            row.limits.requests_per_minute = rpm
        if budget_micros is not None:
            row.limits.budget_micros = budget_micros
        created = await self.admin.keys.CreateVirtualKey(keys_pb2.CreateVirtualKeyRequest(key=row),
                                                         metadata=self.admin.metadata)
        return str(created.secret)


async def provision_surface(admin: Provisioner, fake: FakeProvider, *, files_default: str | None = None) -> Surface:
    """A fresh enterprise-tier org with ``MODELS`` on ``fake`` (one credential per family) and an all-models key."""
    org = await admin.create_org(tier="enterprise")
    for family in ("openai", "anthropic"):
        await admin.create_credential(org.id, family, fake.secret(family), name=f"{family}-cred")
    for name, (family, slug, pricing) in MODELS.items():
        await admin.create_model(org.id, name, family, slug, fake.base_url(family), f"{family}-cred",
                                 pricing=pricing)
    if files_default is not None:
        org.default_models["/v1/files"] = files_default
        await admin.orgs.UpdateOrg(orgs_pb2.UpdateOrgRequest(
            org=org, update_mask=field_mask_pb2.FieldMask(paths=["default_models"])), metadata=admin.metadata)
    row, key = await admin.create_key(org.id)
    return Surface(admin, org.id, key, row.id, {n: s for n, (_, s, _) in MODELS.items()})


def sdk(gateway: str, key: str) -> openai.AsyncOpenAI:
    """The official SDK on the gateway, no retries."""
    return openai.AsyncOpenAI(api_key=key, base_url=gateway + "/v1", max_retries=0, timeout=30)


def raw(gateway: str) -> httpx.AsyncClient:
    """httpx on the gateway root."""
    return httpx.AsyncClient(base_url=gateway, timeout=30)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    """The error object of an OpenAI-shaped error answer (and nothing else in the body)."""
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict) and isinstance(err.get("message"), str) and "type" in err, err
    return err


def jsonl(*models: str, url: str = "/v1/chat/completions") -> bytes:
    """A batch input file: one chat line per model (custom ids r0, r1, ...)."""
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url,
                                "body": {"model": m, "messages": [{"role": "user", "content": f"line {i}"}]}}
                               ).encode() + b"\n" for i, m in enumerate(models))


def upstream_paths(fake: FakeProvider) -> list[str]:
    return [f"{r.method} {r.native_path}" for r in fake.requests]


class UsageReader:
    """ListUsageRecords with the super-admin token."""

    def __init__(self, cp: ControlPlaneProcess) -> None:
        self._channel = grpc.aio.insecure_channel(cp.address)
        self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._md = (("authorization", f"Bearer {cp.admin_token}"),)

    async def close(self) -> None:
        await self._channel.close()

    async def of_org(self, org_id: str) -> list[node_pb2.UsageRecord]:
        records: list[node_pb2.UsageRecord] = []
        token = ""
        while True:
            resp = await self._stub.ListUsageRecords(
                usage_pb2.ListUsageRecordsRequest(org_id=org_id, page_size=1000, page_token=token),
                metadata=self._md, timeout=10)
            records.extend(resp.records)
            token = resp.next_page_token
            if not token:
                return records

    async def wait(self, org_id: str, count: int, where: Callable[[node_pb2.UsageRecord], bool] = lambda r: True,
                   timeout: float = 15.0) -> list[node_pb2.UsageRecord]:
        """The org's records matching ``where`` once there are ``count`` of them, and still exactly
        ``count`` a moment later (a duplicate would show)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in await self.of_org(org_id) if where(r)]
            assert len(found) <= count, [(r.endpoint, r.request_id, r.batch_id) for r in found]
            if len(found) == count:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(found)} of {count} usage records after {timeout}s: "
                                     f"{[(r.endpoint, r.http_status) for r in await self.of_org(org_id)]}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        again = [r for r in await self.of_org(org_id) if where(r)]
        assert len(again) == count, [(r.endpoint, r.request_id, r.batch_id) for r in again]
        return again

    async def by_request_id(self, org_id: str, request_id: str, timeout: float = 15.0) -> node_pb2.UsageRecord:
        records = await self.wait(org_id, 1, lambda r: r.request_id == request_id, timeout)
        return records[0]
