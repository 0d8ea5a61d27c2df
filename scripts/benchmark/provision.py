"""One org wired to the fake upstream through the real admin gRPC API, with limits and pricing on.

Limits are set (org on the ``custom`` tier with explicit caps, the key with its own) but far
above what a benchmark can reach, so every limit check runs and none refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import field_mask_pb2

from odock.v1 import common_pb2, keys_pb2, models_pb2, orgs_pb2
from tests.support.provision import Provisioner, unique_name

CHAT_MODEL = "bench-gpt"
EMBED_MODEL = "bench-embed"
CLAUDE_MODEL = "bench-claude"
CLAUDE_OPENAI_MODEL = "bench-claude-openai"  # the same upstream model, opted in to OpenAI-format access
# The chat model's twin behind three healthy deployments and a fallback (scenario routed_c64).
ROUTED_MODEL = "bench-gpt-routed"
_HUGE = 10**12


@dataclass(frozen=True)
class BenchOrg:
    """What the scenarios need: the key and the model names."""

    org_id: str
    key: str


def _pricing(inp: int, out: int) -> common_pb2.Pricing:
    return common_pb2.Pricing(input_per_mtok_micros=inp, output_per_mtok_micros=out)


def _deployments(count: int, base_url: str, credential: str, slug: str) -> list[models_pb2.Deployment]:
    """``count`` healthy deployments of the chat model, weighted 5/3/2/1…, all at the fake upstream."""
    weights = [5, 3, 2] + [1] * max(0, count - 3)
    out = []
    for i in range(count):
        dep = models_pb2.Deployment(name=f"d{i + 1}", base_url=base_url, credential=credential,
                                    upstream_slug=slug, weight=weights[i])  # fmt: skip
        dep.timeout.FromSeconds(30)
        out.append(dep)
    return out


async def _route(admin: Provisioner, org_id: str, model: str, deployments: int, base_url: str, credential: str) -> None:
    """Put ``deployments`` healthy deployments and a fallback model (never reached) behind ``model``."""
    found = await admin.models.GetModel(models_pb2.GetModelRequest(org_id=org_id, name=model),
                                        metadata=admin.metadata)  # fmt: skip
    del found.deployments[:]
    found.deployments.extend(_deployments(deployments, base_url, credential, "gpt-4.1-mini"))
    found.fallbacks.append(EMBED_MODEL)
    mask = field_mask_pb2.FieldMask(paths=["deployments", "fallbacks"])
    await admin.models.UpdateModel(models_pb2.UpdateModelRequest(model=found, update_mask=mask),
                                   metadata=admin.metadata)  # fmt: skip


async def provision(cp_address: str, admin_token: str, upstream_url: str, *, deployments: int = 1) -> BenchOrg:
    """Create the org, credentials, models and an all-models key.

    ``deployments`` > 1 puts that many deployments (and a fallback model) behind the chat model,
    so a run measures the routing's per-request cost against the plain single-deployment model.
    """
    async with Provisioner.connect(cp_address, admin_token) as admin:
        limits = common_pb2.Limits(requests_per_minute=_HUGE, tokens_per_minute=_HUGE,
                                   monthly_token_quota=_HUGE, monthly_spend_cap_micros=_HUGE)  # fmt: skip
        org_msg = orgs_pb2.Org(name=unique_name("bench"), tier="custom", limits=limits)
        org: orgs_pb2.Org = await admin.orgs.CreateOrg(orgs_pb2.CreateOrgRequest(org=org_msg),
                                                       metadata=admin.metadata)  # fmt: skip
        oa = await admin.create_credential(org.id, "openai", "sk-bench-openai-0123456789", name="openai")
        an = await admin.create_credential(org.id, "anthropic", "sk-ant-bench-0123456789", name="anthropic")
        await admin.create_model(org.id, CHAT_MODEL, "openai", "gpt-4.1-mini", f"{upstream_url}/v1", oa.name,
                                 pricing=_pricing(400_000, 1_600_000))  # fmt: skip
        await admin.create_model(org.id, EMBED_MODEL, "openai", "text-embedding-3-small", f"{upstream_url}/v1",
                                 oa.name, pricing=_pricing(20_000, 0))  # fmt: skip
        await admin.create_model(org.id, CLAUDE_MODEL, "anthropic", "claude-sonnet-4-5", upstream_url, an.name,
                                 pricing=_pricing(3_000_000, 15_000_000))  # fmt: skip
        translated = await admin.create_model(org.id, CLAUDE_OPENAI_MODEL, "anthropic", "claude-sonnet-4-5",
                                              upstream_url, an.name, pricing=_pricing(3_000_000, 15_000_000))  # fmt: skip
        translated.openai_compatible = True
        await admin.models.UpdateModel(
            models_pb2.UpdateModelRequest(model=translated,
                                          update_mask=field_mask_pb2.FieldMask(paths=["openai_compatible"])),
            metadata=admin.metadata,
        )  # fmt: skip
        await admin.create_model(org.id, ROUTED_MODEL, "openai", "gpt-4.1-mini", f"{upstream_url}/v1", oa.name,
                                 pricing=_pricing(400_000, 1_600_000))  # fmt: skip
        await _route(admin, org.id, ROUTED_MODEL, 3, f"{upstream_url}/v1", oa.name)
        if deployments > 1:
            await _route(admin, org.id, CHAT_MODEL, deployments, f"{upstream_url}/v1", oa.name)
        key_limits = common_pb2.KeyLimits(
            requests_per_minute=_HUGE, tokens_per_minute=_HUGE, budget_micros=_HUGE
        )
        key = keys_pb2.VirtualKey(org_id=org.id, name=unique_name("key"), all_models=True, limits=key_limits)
        resp: keys_pb2.CreateVirtualKeyResponse = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
        )
        return BenchOrg(org_id=org.id, key=resp.secret)
