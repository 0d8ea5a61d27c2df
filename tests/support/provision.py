"""Create orgs, credentials, models and virtual keys through the real admin gRPC API.

Usage::

    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = await admin.create_org("acme")
        ...

or, for end-to-end tests, ``setup = await provision_all_families(cp, fake)``: one org with a
credential per family (the fake's expected secrets), the models in ``STANDARD_MODELS`` pointing
at the fake, and one key allowed to use all of them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self, cast

import grpc
from google.protobuf import duration_pb2, field_mask_pb2

from odock.v1 import (
    common_pb2,
    credentials_pb2,
    credentials_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    orgs_pb2,
    orgs_pb2_grpc,
)

FAMILY_ENUM: dict[str, common_pb2.ProviderFamily.ValueType] = {
    "openai": common_pb2.PROVIDER_FAMILY_OPENAI,
    "anthropic": common_pb2.PROVIDER_FAMILY_ANTHROPIC,
    "gemini": common_pb2.PROVIDER_FAMILY_GEMINI,
    "vllm": common_pb2.PROVIDER_FAMILY_VLLM,
}


class ControlPlaneLike(Protocol):
    """What provisioning needs from a started control plane (``tests/support/planes.py``)."""

    @property
    def address(self) -> str: ...

    @property
    def admin_token(self) -> str: ...


class UpstreamLike(Protocol):
    """What provisioning needs from the fake provider."""

    def base_url(self, family: str | int) -> str: ...

    def secret(self, family: str | int) -> str: ...


def family_enum(family: str | int) -> common_pb2.ProviderFamily.ValueType:
    """A ProviderFamily value from a name ("openai") or the value itself."""
    if isinstance(family, int):
        return cast("common_pb2.ProviderFamily.ValueType", family)
    return FAMILY_ENUM[family]


def unique_name(prefix: str) -> str:
    """A valid org/credential/key name that won't collide across tests."""
    return f"{prefix}-{secrets.token_hex(4)}"


class Provisioner:
    """Admin RPCs with the ``authorization: Bearer <token>`` metadata set."""

    def __init__(self, channel: grpc.aio.Channel, token: str) -> None:
        self.channel = channel
        self.metadata = (("authorization", f"Bearer {token}"),)
        self.orgs = orgs_pb2_grpc.OrgServiceStub(channel)
        self.credentials = credentials_pb2_grpc.CredentialServiceStub(channel)
        self.models = models_pb2_grpc.ModelServiceStub(channel)
        self.keys = keys_pb2_grpc.VirtualKeyServiceStub(channel)

    @classmethod
    def connect(cls, address: str, token: str) -> Provisioner:
        """An insecure loopback channel to ``address`` (close it, or use ``async with``)."""
        return cls(grpc.aio.insecure_channel(address), token)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def create_org(self, name: str | None = None, *, default_models: dict[str, str] | None = None,
                         tier: str = "") -> orgs_pb2.Org:
        """A new org (a unique name when none is given)."""
        org = orgs_pb2.Org(name=name or unique_name("org"), tier=tier, default_models=default_models or {})
        result: orgs_pb2.Org = await self.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=org),
                                                         metadata=self.metadata)
        return result

    async def create_credential(self, org_id: str, family: str | int, secret: str,
                                name: str | None = None) -> credentials_pb2.Credential:
        """A provider credential holding ``secret``."""
        req = credentials_pb2.CreateCredentialRequest(
            org_id=org_id, name=name or unique_name("cred"), family=family_enum(family), secret=secret)
        result: credentials_pb2.Credential = await self.credentials.CreateCredential(req, metadata=self.metadata)
        return result

    async def create_model(self, org_id: str, name: str, family: str | int, slug: str, base_url: str,
                           credential: str, *, timeout_s: float = 30.0,
                           pricing: common_pb2.Pricing | None = None) -> models_pb2.Model:
        """A model mapping ``name`` to ``slug`` at ``base_url`` with ``credential`` (a credential name)."""
        timeout = duration_pb2.Duration()
        timeout.FromNanoseconds(int(timeout_s * 1e9))
        model = models_pb2.Model(org_id=org_id, name=name, family=family_enum(family), upstream_slug=slug,
                                 base_url=base_url, timeout=timeout, credential=credential,
                                 pricing=pricing or common_pb2.Pricing())
        result: models_pb2.Model = await self.models.CreateModel(models_pb2.CreateModelRequest(model=model),
                                                                 metadata=self.metadata)
        return result

    async def create_key(self, org_id: str, models: Sequence[str] | None = None,
                         name: str | None = None) -> tuple[keys_pb2.VirtualKey, str]:
        """A virtual key for every model (``models=None``) or only ``models``; returns (key, plaintext)."""
        key = keys_pb2.VirtualKey(org_id=org_id, name=name or unique_name("key"),
                                  all_models=models is None, models=list(models or ()))
        resp: keys_pb2.CreateVirtualKeyResponse = await self.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=self.metadata)
        return resp.key, resp.secret

    async def revoke_key(self, org_id: str, key_id: str) -> keys_pb2.VirtualKey:
        """Revoke a key."""
        result: keys_pb2.VirtualKey = await self.keys.RevokeVirtualKey(
            keys_pb2.RevokeVirtualKeyRequest(org_id=org_id, id=key_id), metadata=self.metadata)
        return result


@dataclass(frozen=True)
class ModelSpec:
    """A model to provision: its name in the org, family and upstream slug."""

    name: str
    family: str
    slug: str


# One chat-capable model per family, plus embedding/image/audio models. The vLLM slugs carry
# a "/" like real Hugging Face ids, so passthrough of slugs with separators is always exercised.
STANDARD_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("gpt-chat", "openai", "gpt-4.1-mini-upstream"),
    ModelSpec("text-embed", "openai", "text-embedding-3-small-upstream"),
    ModelSpec("image-gen", "openai", "gpt-image-1-upstream"),
    ModelSpec("claude", "anthropic", "claude-sonnet-4-5-upstream"),
    ModelSpec("gemini-flash", "gemini", "gemini-2.5-flash-upstream"),
    ModelSpec("llama", "vllm", "meta-llama/Llama-3.1-8B-Instruct"),
    ModelSpec("bge", "vllm", "BAAI/bge-small-en-v1.5"),
    ModelSpec("whisper", "vllm", "openai/whisper-large-v3"),
)


@dataclass
class Provisioned:
    """An org wired to the fake: its models by name and a key allowed to use them all."""

    org: orgs_pb2.Org
    key: str
    key_row: keys_pb2.VirtualKey
    models: dict[str, models_pb2.Model] = field(default_factory=dict)
    credentials: dict[str, credentials_pb2.Credential] = field(default_factory=dict)

    def slug(self, model_name: str) -> str:
        """The upstream slug of one of this org's models."""
        return self.models[model_name].upstream_slug


async def provision_org(admin: Provisioner, upstream: UpstreamLike, specs: Iterable[ModelSpec] = STANDARD_MODELS,
                        *, org_name: str | None = None, slug_suffix: str = "",
                        default_models: dict[str, str] | None = None, timeout_s: float = 30.0,
                        tier: str = "enterprise") -> Provisioned:
    """One org with a credential per family used, the ``specs`` models and an all-models key.

    The org is on the unlimited ``enterprise`` tier unless ``tier`` says otherwise, so tests
    that are not about limits are not refused by the default (free) tier's limits.
    """
    org = await admin.create_org(org_name, tier=tier)
    specs = list(specs)
    creds: dict[str, credentials_pb2.Credential] = {}
    for family in dict.fromkeys(s.family for s in specs):
        creds[family] = await admin.create_credential(org.id, family, upstream.secret(family), name=f"{family}-cred")
    models: dict[str, models_pb2.Model] = {}
    for spec in specs:
        models[spec.name] = await admin.create_model(
            org.id, spec.name, spec.family, spec.slug + slug_suffix, upstream.base_url(spec.family),
            creds[spec.family].name, timeout_s=timeout_s)
    if default_models:
        org.default_models.update(default_models)
        req = orgs_pb2.UpdateOrgRequest(org=org, update_mask=field_mask_pb2.FieldMask(paths=["default_models"]))
        org = await admin.orgs.UpdateOrg(req, metadata=admin.metadata)
    key_row, key = await admin.create_key(org.id)
    return Provisioned(org=org, key=key, key_row=key_row, models=models, credentials=creds)


async def provision_all_families(cp: ControlPlaneLike, upstream: UpstreamLike,
                                 specs: Iterable[ModelSpec] = STANDARD_MODELS, *, slug_suffix: str = "",
                                 default_models: dict[str, str] | None = None) -> Provisioned:
    """``provision_org`` with ``specs`` against ``upstream``, over a short-lived channel."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        return await provision_org(admin, upstream, specs, slug_suffix=slug_suffix, default_models=default_models)
