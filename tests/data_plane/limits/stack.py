"""Real planes for the limits tests: a control plane on a fixed port (restartable at the same
address) with a scaled "minute", data planes with short lease timings, orgs and keys with limits
provisioned through the admin API, and chat requests of every family."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from odock.v1 import common_pb2, keys_pb2, orgs_pb2
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import STANDARD_MODELS, Provisioner
from tests.support.secrets import PlaneSecrets

MINUTE_SECONDS = 10.0  # a "minute" of the per-minute limits, scaled down
CP_ENV = {"ODOCK_LEASE_TTL_SECONDS": "30"}
DP_ENV = {
    "ODOCK_LIMIT_LEASE_SECONDS": "0.5",
    "ODOCK_LIMIT_RECHECK_SECONDS": "0.3",
    "ODOCK_LIMIT_IDLE_RETURN_SECONDS": "2",
    "ODOCK_USAGE_BATCH_AGE_SECONDS": "0.05",
}
CHAT_MODEL = {"openai": "gpt-chat", "anthropic": "claude", "gemini": "gemini-flash", "vllm": "llama"}
# micro-USD per million tokens
CHAT_PRICE = common_pb2.Pricing(input_per_mtok_micros=2_000_000, output_per_mtok_micros=8_000_000)


def free_port() -> int:
    """A port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cp(
    db: Path, listen: str, secrets: PlaneSecrets | None = None, *, minute: float = MINUTE_SECONDS
) -> ControlPlaneProcess:
    """A control plane on SQLite ``db`` at ``listen`` whose "minute" lasts ``minute`` seconds."""
    env = {"ODOCK_CP_LISTEN": listen, "ODOCK_LIMIT_MINUTE_SECONDS": str(minute), **CP_ENV}
    return start_control_plane(f"sqlite:///{db}", extra_env=env, secrets=secrets)


def start_dp(cp: ControlPlaneProcess, spool: Path, **env: str) -> DataPlaneProcess:
    """A connected data plane with short lease timings (``env`` overrides)."""
    dp = start_data_plane(
        cp.address, cp.node_token, cp.pepper,
        extra_env={**DP_ENV, "ODOCK_USAGE_SPOOL_DIR": str(spool), **env},
    )  # fmt: skip
    dp.wait_connected()
    return dp


@dataclass
class LimitedOrg:
    """An org on the custom tier with the chat models, and keys made for a test."""

    org: orgs_pb2.Org
    cp: ControlPlaneProcess

    async def key(self, limits: common_pb2.KeyLimits | None = None) -> tuple[keys_pb2.VirtualKey, str]:
        """A new all-models key with ``limits``."""
        async with Provisioner.connect(self.cp.address, self.cp.admin_token) as admin:
            key = keys_pb2.VirtualKey(org_id=self.org.id, name=f"k{free_port()}", all_models=True,
                                      limits=limits or common_pb2.KeyLimits())  # fmt: skip
            resp = await admin.keys.CreateVirtualKey(
                keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
            )
            return resp.key, resp.secret


async def limited_org(
    cp: ControlPlaneProcess,
    fake: FakeProvider,
    limits: common_pb2.Limits,
    *,
    fail_closed: bool = False,
    priced: bool = False,
) -> LimitedOrg:
    """An org (custom tier: only ``limits``) with one chat model per family on ``fake``."""
    policy = common_pb2.OUTAGE_POLICY_FAIL_CLOSED if fail_closed else common_pb2.OUTAGE_POLICY_FAIL_OPEN
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = orgs_pb2.Org(name=f"lim-{free_port()}", tier="custom", limits=limits, outage_policy=policy)
        created = await admin.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=org), metadata=admin.metadata)
        for spec in STANDARD_MODELS:
            if spec.name not in CHAT_MODEL.values():
                continue
            cred = await admin.create_credential(created.id, spec.family, fake.secret(spec.family))
            await admin.create_model(
                created.id, spec.name, spec.family, spec.slug, fake.base_url(spec.family), cred.name,
                pricing=CHAT_PRICE if priced else None,
            )  # fmt: skip
    return LimitedOrg(created, cp)


def chat(
    family: str, key: str, *, max_tokens: int = 16, text: str = "hi"
) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a non-streamed chat request of ``family``."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    model = CHAT_MODEL[family]
    payload: dict[str, Any]
    if family == "gemini":
        payload = {"contents": [{"role": "user", "parts": [{"text": text}]}],
                   "generationConfig": {"maxOutputTokens": max_tokens}}  # fmt: skip
        return f"/v1beta/models/{model}:generateContent", json.dumps(payload).encode(), headers
    payload = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    path = {
        "openai": "/v1/chat/completions",
        "anthropic": "/v1/messages",
        "vllm": "/v1/vllm/chat/completions",
    }
    return path[family], json.dumps(payload).encode(), headers


async def post_chat(
    client: httpx.AsyncClient, base: str, family: str, key: str, *, max_tokens: int = 16
) -> httpx.Response:
    """Send one chat request of ``family`` to the node at ``base``."""
    path, body, headers = chat(family, key, max_tokens=max_tokens)
    return await client.post(base + path, content=body, headers=headers)


def error_code(family: str, resp: httpx.Response) -> str:
    """The gateway error code in ``family``'s error shape."""
    body = resp.json()
    if family == "gemini":
        return str(body["error"]["details"][0]["reason"])
    return str(body["error"]["code"])


def limits_status(dp: DataPlaneProcess) -> dict[str, Any]:
    """The node's limits status object."""
    status = dp.status()["limits"]
    assert isinstance(status, dict)
    return status
