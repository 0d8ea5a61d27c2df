"""In-process control plane for the admin-RPC tests: the real server wiring
(``control_plane.server.start``: auth interceptor, every servicer, health,
reflection) on 127.0.0.1:0 over a migrated database, and async stubs."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from control_plane import server
from control_plane.settings import Settings
from odock.v1 import (
    admin_tokens_pb2,
    admin_tokens_pb2_grpc,
    common_pb2,
    credentials_pb2,
    credentials_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    node_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
)
from tests.support.secrets import PlaneSecrets, keks_spec

T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]
OPENAI = common_pb2.PROVIDER_FAMILY_OPENAI
ANTHROPIC = common_pb2.PROVIDER_FAMILY_ANTHROPIC
STOP_STEP_TIMEOUT_S = 15.0


def bearer(token: str) -> Metadata:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def settings_for(db_url: str, secrets: PlaneSecrets, **overrides: Any) -> Settings:
    """Settings as from_env would build them, for an already migrated database."""
    values: dict[str, Any] = {
        "listen": "127.0.0.1:0", "database_url": db_url, "keks_spec": keks_spec(secrets.keks),
        "kek_ids": tuple(secrets.keks), "key_pepper": secrets.pepper, "admin_token": secrets.admin_token,
        "node_tokens": (secrets.node_token,), "migrate": False, "grace_seconds": 0.5, "heartbeat_seconds": 0.2,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


@dataclass
class AdminEnv:
    """A running in-process control plane with stubs and the super-admin's metadata."""

    running: server.RunningServer
    channel: grpc.aio.Channel
    secrets: PlaneSecrets
    db_url: str
    orgs: orgs_pb2_grpc.OrgServiceAsyncStub
    creds: credentials_pb2_grpc.CredentialServiceAsyncStub
    models: models_pb2_grpc.ModelServiceAsyncStub
    keys: keys_pb2_grpc.VirtualKeyServiceAsyncStub
    tokens: admin_tokens_pb2_grpc.AdminTokenServiceAsyncStub
    node: node_pb2_grpc.NodeServiceAsyncStub

    @property
    def su(self) -> Metadata:
        """Super-admin metadata."""
        return bearer(self.secrets.admin_token)

    @property
    def node_md(self) -> Metadata:
        """Node-token metadata."""
        return bearer(self.secrets.node_token)

    # -- provisioning shortcuts (as the super-admin) --------------------------

    async def org(self, name: str, **fields: Any) -> orgs_pb2.Org:
        org: orgs_pb2.Org = await self.orgs.CreateOrg(
            orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name=name, **fields)), metadata=self.su
        )
        return org

    async def credential(
        self,
        org_id: str,
        name: str = "main",
        *,
        family: common_pb2.ProviderFamily.ValueType = OPENAI,
        secret: str = "sk-test-0123456789abcd",
    ) -> credentials_pb2.Credential:
        cred: credentials_pb2.Credential = await self.creds.CreateCredential(
            credentials_pb2.CreateCredentialRequest(org_id=org_id, name=name, family=family, secret=secret),
            metadata=self.su,
        )
        return cred

    async def model(
        self, org_id: str, name: str, credential: str = "main", **fields: Any
    ) -> models_pb2.Model:
        fields.setdefault("family", OPENAI)
        fields.setdefault("upstream_slug", "gpt-4.1-mini")
        fields.setdefault("base_url", "https://api.openai.com/v1")
        model: models_pb2.Model = await self.models.CreateModel(
            models_pb2.CreateModelRequest(
                model=models_pb2.Model(org_id=org_id, name=name, credential=credential, **fields)
            ),
            metadata=self.su,
        )
        return model

    async def key(self, org_id: str, **fields: Any) -> keys_pb2.CreateVirtualKeyResponse:
        if "models" not in fields:
            fields.setdefault("all_models", True)
        resp: keys_pb2.CreateVirtualKeyResponse = await self.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=keys_pb2.VirtualKey(org_id=org_id, **fields)),
            metadata=self.su,
        )
        return resp

    async def org_token(self, org_id: str, name: str = "ops") -> str:
        resp: admin_tokens_pb2.CreateAdminTokenResponse = await self.tokens.CreateAdminToken(
            admin_tokens_pb2.CreateAdminTokenRequest(org_id=org_id, name=name), metadata=self.su
        )
        return resp.secret


@contextlib.asynccontextmanager
async def open_admin_env(db_url: str, **settings_overrides: Any) -> AsyncIterator[AdminEnv]:
    """Start the full server in-process over a migrated database; stop it afterwards."""
    secrets = PlaneSecrets()
    running = await server.start(settings_for(db_url, secrets, **settings_overrides))
    channel = grpc.aio.insecure_channel(running.address)
    try:
        yield AdminEnv(
            running, channel, secrets, db_url,
            orgs_pb2_grpc.OrgServiceStub(channel), credentials_pb2_grpc.CredentialServiceStub(channel),
            models_pb2_grpc.ModelServiceStub(channel), keys_pb2_grpc.VirtualKeyServiceStub(channel),
            admin_tokens_pb2_grpc.AdminTokenServiceStub(channel), node_pb2_grpc.NodeServiceStub(channel),
        )  # fmt: skip
    finally:
        await _stop(running, channel)


async def _stop(running: server.RunningServer, channel: grpc.aio.Channel) -> None:
    # Step by step with a deadline each, so a hang names its step and shows every task's stack.
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("channel.close", channel.close),
        ("health shutdown", running.health.enter_graceful_shutdown),
        ("server.stop", lambda: running.server.stop(0)),
        ("feed.stop", running.feed.stop),
        ("engine.dispose", running.engine.dispose),
    ]
    for name, step in steps:
        try:
            await asyncio.wait_for(step(), STOP_STEP_TIMEOUT_S)
        except TimeoutError:
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            raise AssertionError(f"control plane shutdown hung in {name}") from None


async def status_of(call: Awaitable[T]) -> tuple[grpc.StatusCode, str]:
    """The status an RPC ends with (OK when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def expect(code: grpc.StatusCode, call: Awaitable[T]) -> str:
    """Assert the RPC fails with ``code``; returns the message."""
    got, message = await status_of(call)
    assert got == code, f"expected {code.name}, got {got.name}: {message}"
    assert "\n" not in message and "Traceback" not in message
    return message
