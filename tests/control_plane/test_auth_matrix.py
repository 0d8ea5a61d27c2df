"""Every RPC of every odock.v1 service against every kind of caller.

The RPCs are enumerated from the generated descriptors, so a new RPC without
a request builder below fails ``test_every_rpc_has_a_case``.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

import odock.v1
from odock import keyformat
from odock.v1 import (
    admin_tokens_pb2,
    common_pb2,
    credentials_pb2,
    keys_pb2,
    models_pb2,
    node_pb2,
    orgs_pb2,
    usage_pb2,
)
from tests.control_plane.admin_env import AdminEnv, Metadata, bearer

S = grpc.StatusCode
AUTH_FAILURES = (S.UNAUTHENTICATED, S.PERMISSION_DENIED)
STREAM_FIRST_MESSAGE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Target:
    """The resources of one org that requests point at."""

    org_id: str
    org_name: str
    key_id: str
    spare_token_id: str


Builder = Callable[[Target], Message]

CASES: dict[str, Builder] = {
    "/odock.v1.OrgService/CreateOrg": lambda t: orgs_pb2.CreateOrgRequest(org=orgs_pb2.Org(name=f"new-{t.org_name}")),
    "/odock.v1.OrgService/GetOrg": lambda t: orgs_pb2.GetOrgRequest(id=t.org_id),
    "/odock.v1.OrgService/ListOrgs": lambda t: orgs_pb2.ListOrgsRequest(),
    "/odock.v1.OrgService/UpdateOrg": lambda t: orgs_pb2.UpdateOrgRequest(
        org=orgs_pb2.Org(id=t.org_id, name=t.org_name, labels={"touched": "yes"})),
    "/odock.v1.OrgService/DeleteOrg": lambda t: orgs_pb2.DeleteOrgRequest(id=t.org_id),
    "/odock.v1.OrgService/ListTiers": lambda t: orgs_pb2.ListTiersRequest(),
    "/odock.v1.CredentialService/CreateCredential": lambda t: credentials_pb2.CreateCredentialRequest(
        org_id=t.org_id, name="second", family=common_pb2.PROVIDER_FAMILY_OPENAI, secret="sk-second-0123456789"),
    "/odock.v1.CredentialService/GetCredential": lambda t: credentials_pb2.GetCredentialRequest(
        org_id=t.org_id, name="main"),
    "/odock.v1.CredentialService/ListCredentials": lambda t: credentials_pb2.ListCredentialsRequest(org_id=t.org_id),
    "/odock.v1.CredentialService/RotateCredential": lambda t: credentials_pb2.RotateCredentialRequest(
        org_id=t.org_id, name="main", secret="sk-rotated-0123456789"),
    "/odock.v1.CredentialService/DeleteCredential": lambda t: credentials_pb2.DeleteCredentialRequest(
        org_id=t.org_id, name="main"),
    "/odock.v1.CredentialService/RewrapCredentials": lambda t: credentials_pb2.RewrapCredentialsRequest(),
    "/odock.v1.ModelService/CreateModel": lambda t: models_pb2.CreateModelRequest(model=models_pb2.Model(
        org_id=t.org_id, name="second", family=common_pb2.PROVIDER_FAMILY_OPENAI, upstream_slug="s",
        base_url="https://api.openai.com/v1", credential="main")),
    "/odock.v1.ModelService/GetModel": lambda t: models_pb2.GetModelRequest(org_id=t.org_id, name="gpt"),
    "/odock.v1.ModelService/ListModels": lambda t: models_pb2.ListModelsRequest(org_id=t.org_id),
    "/odock.v1.ModelService/UpdateModel": lambda t: models_pb2.UpdateModelRequest(model=models_pb2.Model(
        org_id=t.org_id, name="gpt", family=common_pb2.PROVIDER_FAMILY_OPENAI, upstream_slug="s2",
        base_url="https://api.openai.com/v1", credential="main")),
    "/odock.v1.ModelService/DeleteModel": lambda t: models_pb2.DeleteModelRequest(org_id=t.org_id, name="nope"),
    "/odock.v1.VirtualKeyService/CreateVirtualKey": lambda t: keys_pb2.CreateVirtualKeyRequest(
        key=keys_pb2.VirtualKey(org_id=t.org_id, models=["gpt"])),
    "/odock.v1.VirtualKeyService/GetVirtualKey": lambda t: keys_pb2.GetVirtualKeyRequest(org_id=t.org_id, id=t.key_id),
    "/odock.v1.VirtualKeyService/ListVirtualKeys": lambda t: keys_pb2.ListVirtualKeysRequest(org_id=t.org_id),
    "/odock.v1.VirtualKeyService/UpdateVirtualKey": lambda t: keys_pb2.UpdateVirtualKeyRequest(
        key=keys_pb2.VirtualKey(org_id=t.org_id, id=t.key_id, all_models=True)),
    "/odock.v1.VirtualKeyService/RevokeVirtualKey": lambda t: keys_pb2.RevokeVirtualKeyRequest(
        org_id=t.org_id, id="key_doesnotexist"),
    "/odock.v1.VirtualKeyService/RotateVirtualKey": lambda t: keys_pb2.RotateVirtualKeyRequest(
        org_id=t.org_id, id=t.key_id),
    "/odock.v1.AdminTokenService/CreateAdminToken": lambda t: admin_tokens_pb2.CreateAdminTokenRequest(
        org_id=t.org_id, name="another"),
    "/odock.v1.AdminTokenService/ListAdminTokens": lambda t: admin_tokens_pb2.ListAdminTokensRequest(org_id=t.org_id),
    "/odock.v1.AdminTokenService/RevokeAdminToken": lambda t: admin_tokens_pb2.RevokeAdminTokenRequest(
        org_id=t.org_id, id=t.spare_token_id),
    "/odock.v1.NodeService/ResolveKey": lambda t: node_pb2.ResolveKeyRequest(key_digest=b"\x01" * 32, node_id="n"),
    "/odock.v1.NodeService/ResolveRoute": lambda t: node_pb2.ResolveRouteRequest(
        org_id=t.org_id, model_name="gpt", node_public_key=b"\x09" * 32, node_id="n"),
    "/odock.v1.NodeService/ListRoutes": lambda t: node_pb2.ListRoutesRequest(org_id=t.org_id),
    "/odock.v1.NodeService/Watch": lambda t: node_pb2.WatchRequest(after_revision=0, node_id="n"),
    "/odock.v1.NodeService/ReportUsage": lambda t: node_pb2.UsageBatch(node_id="n", sequence=1),
    "/odock.v1.NodeService/AcquireLeases": lambda t: node_pb2.AcquireLeasesRequest(node_id="n", asks=[
        node_pb2.LeaseAsk(org_id=t.org_id, metric=node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE, want=1, need=1)]),
    "/odock.v1.NodeService/PutObject": lambda t: node_pb2.PutObjectRequest(object=node_pb2.ProviderObject(
        kind=node_pb2.OBJECT_KIND_FILE, id="file-auth", org_id=t.org_id, model_name="gpt")),
    "/odock.v1.NodeService/GetObject": lambda t: node_pb2.GetObjectRequest(
        org_id=t.org_id, kind=node_pb2.OBJECT_KIND_FILE, id="file-auth"),
    "/odock.v1.NodeService/ListObjects": lambda t: node_pb2.ListObjectsRequest(
        org_id=t.org_id, kind=node_pb2.OBJECT_KIND_FILE),
    "/odock.v1.NodeService/DeleteObject": lambda t: node_pb2.GetObjectRequest(
        org_id=t.org_id, kind=node_pb2.OBJECT_KIND_FILE, id="file-nope"),
    "/odock.v1.NodeService/ClaimBatchUsage": lambda t: node_pb2.GetObjectRequest(
        org_id=t.org_id, kind=node_pb2.OBJECT_KIND_BATCH, id="batch_nope"),
    "/odock.v1.UsageService/GetUsageTotals": lambda t: usage_pb2.GetUsageTotalsRequest(
        org_id=t.org_id, start_time=Timestamp(seconds=1_700_000_000)),
    "/odock.v1.UsageService/GetUsageRecord": lambda t: usage_pb2.GetUsageRecordRequest(
        org_id=t.org_id, request_id="req-1"),
    "/odock.v1.UsageService/ListUsageRecords": lambda t: usage_pb2.ListUsageRecordsRequest(org_id=t.org_id),
}  # fmt: skip

# Org admins may never call these, whatever org they name.
SUPER_ONLY = {
    "/odock.v1.OrgService/CreateOrg",
    "/odock.v1.OrgService/ListOrgs",
    "/odock.v1.OrgService/DeleteOrg",
    "/odock.v1.CredentialService/RewrapCredentials",
}
# RPCs that name no org: an org admin reaching "into another org" is just calling them.
ORGLESS = {"/odock.v1.OrgService/ListTiers"}


def all_methods() -> dict[str, MethodDescriptor]:
    """Every RPC in every generated odock.v1 module, by full path."""
    found: dict[str, MethodDescriptor] = {}
    for info in pkgutil.iter_modules(odock.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"odock.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                found[f"/{service.full_name}/{method.name}"] = method
    return found


def is_node(path: str) -> bool:
    return path.startswith("/odock.v1.NodeService/")


async def call(
    channel: grpc.aio.Channel,
    path: str,
    method: MethodDescriptor,
    request: Message,
    metadata: Metadata | None,
) -> S:
    """Invoke any RPC generically; the status it ends with (OK once a streaming RPC answers)."""
    response_cls = message_factory.GetMessageClass(method.output_type)
    kwargs: dict[str, Any] = {
        "request_serializer": type(request).SerializeToString,
        "response_deserializer": response_cls.FromString,
    }
    try:
        if not method.client_streaming and not method.server_streaming:
            await channel.unary_unary(path, **kwargs)(request, metadata=metadata, timeout=30)
            return S.OK
        stream: Any
        if method.client_streaming:
            stream = channel.stream_stream(path, **kwargs)(iter([request]), metadata=metadata)
        else:
            stream = channel.unary_stream(path, **kwargs)(request, metadata=metadata)
        try:
            async with asyncio.timeout(STREAM_FIRST_MESSAGE_TIMEOUT_S):
                async for _ in stream:
                    return S.OK
            return S.OK
        finally:
            stream.cancel()
    except grpc.aio.AioRpcError as exc:
        return exc.code()


def test_every_rpc_has_a_case() -> None:
    methods = all_methods()
    assert methods, "no services found in odock.v1"
    assert set(methods) - set(CASES) == set(), "RPCs without an auth-matrix case"
    assert set(CASES) - set(methods) == set(), "cases for RPCs that do not exist"


async def _provision(cp: AdminEnv, name: str) -> tuple[Target, str]:
    org = await cp.org(name)
    await cp.credential(org.id)
    await cp.model(org.id, "gpt")
    key = await cp.key(org.id)
    token = await cp.org_token(org.id, "ops")
    spare = await cp.tokens.CreateAdminToken(
        admin_tokens_pb2.CreateAdminTokenRequest(org_id=org.id, name="spare"), metadata=cp.su
    )
    return Target(org.id, org.name, key.key.id, spare.token.id), token


async def test_auth_matrix(cp: AdminEnv) -> None:
    methods = all_methods()
    own, own_token = await _provision(cp, "own")
    other, _ = await _provision(cp, "other")
    revoked_org = await cp.org("revoked")
    revoked_token = await cp.org_token(revoked_org.id, "gone")
    tokens = await cp.tokens.ListAdminTokens(admin_tokens_pb2.ListAdminTokensRequest(org_id=revoked_org.id),
                                             metadata=cp.su)  # fmt: skip
    await cp.tokens.RevokeAdminToken(admin_tokens_pb2.RevokeAdminTokenRequest(
        org_id=revoked_org.id, id=tokens.tokens[0].id), metadata=cp.su)  # fmt: skip
    callers: dict[str, Metadata | None] = {
        "no token": None,
        "empty bearer": (("authorization", "Bearer "),),
        "wrong token": bearer("not-a-real-token-" + "x" * 32),
        "unknown org token": bearer(keyformat.generate(keyformat.ADMIN_TOKEN_PREFIX)),
        "revoked org token": bearer(revoked_token),
        "node token": cp.node_md,
        "super-admin": cp.su,
        "org admin, other org": bearer(own_token),
    }

    def expected(path: str, caller: str) -> S | str:
        if caller in ("no token", "empty bearer", "wrong token", "unknown org token", "revoked org token"):
            return S.UNAUTHENTICATED
        if is_node(path):
            return "allowed" if caller == "node token" else S.PERMISSION_DENIED
        if caller == "node token":
            return S.PERMISSION_DENIED
        if caller == "org admin, other org" and path not in ORGLESS:
            return S.PERMISSION_DENIED
        return "allowed"

    mismatches: list[str] = []
    for caller, metadata in callers.items():
        for path in sorted(methods, key=lambda p: (p.endswith("/DeleteOrg"), p)):
            want = expected(path, caller)
            got = await call(cp.channel, path, methods[path], CASES[path](other), metadata)
            ok = got not in AUTH_FAILURES if want == "allowed" else got == want
            if not ok:
                mismatches.append(f"{path} as {caller}: want {want}, got {got.name}")
    # An org admin in its own org is allowed everything but the super-admin-only RPCs.
    for path in sorted(p for p in methods if not is_node(p)):
        got = await call(cp.channel, path, methods[path], CASES[path](own), bearer(own_token))
        want_denied = path in SUPER_ONLY
        if (got == S.PERMISSION_DENIED) != want_denied or got == S.UNAUTHENTICATED:
            mismatches.append(f"{path} as org admin, own org: got {got.name}")
    assert mismatches == []
