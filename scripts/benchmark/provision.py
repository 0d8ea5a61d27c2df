"""One org wired to the fake upstream through the real admin gRPC API, with limits and pricing on.

Limits are set (org on the ``custom`` tier with explicit caps, the key with its own) but far
above what a benchmark can reach, so every limit check runs and none refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

from odock.v1 import common_pb2, keys_pb2, orgs_pb2
from tests.support.provision import Provisioner, unique_name

CHAT_MODEL = "bench-gpt"
EMBED_MODEL = "bench-embed"
CLAUDE_MODEL = "bench-claude"
_HUGE = 10**12


@dataclass(frozen=True)
class BenchOrg:
    """What the scenarios need: the key and the model names."""

    org_id: str
    key: str


def _pricing(inp: int, out: int) -> common_pb2.Pricing:
    return common_pb2.Pricing(input_per_mtok_micros=inp, output_per_mtok_micros=out)


async def provision(cp_address: str, admin_token: str, upstream_url: str) -> BenchOrg:
    """Create the org, credentials, models and an all-models key."""
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
        key_limits = common_pb2.KeyLimits(
            requests_per_minute=_HUGE, tokens_per_minute=_HUGE, budget_micros=_HUGE
        )
        key = keys_pb2.VirtualKey(org_id=org.id, name=unique_name("key"), all_models=True, limits=key_limits)
        resp: keys_pb2.CreateVirtualKeyResponse = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
        )
        return BenchOrg(org_id=org.id, key=resp.secret)
