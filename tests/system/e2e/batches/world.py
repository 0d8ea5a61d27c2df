"""This package's orgs: an OpenAI model on the fake upstream priced with a batch percent of its own."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import grpc
import openai

from odock.v1 import common_pb2, keys_pb2, node_pb2, node_pb2_grpc
from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioner

MODEL, SLUG = "gpt-batch", "gpt-4o-mini-batch-upstream"
BATCH_PERCENT = 40  # not the default 50: the record's cost shows the model's own percent was applied
PRICES = common_pb2.Pricing(input_per_mtok_micros=1_000_000, output_per_mtok_micros=2_000_000,
                            batch_price_percent=BATCH_PERCENT)


@dataclass
class BatchOrg:
    admin: Provisioner
    org_id: str
    key: str

    async def limited_key(self, *, budget_micros: int | None = None, rpm: int | None = None) -> str:
        """A new all-models key of this org with a lifetime budget and/or a requests-per-minute limit."""
        row = keys_pb2.VirtualKey(org_id=self.org_id, name=f"b-{time.monotonic_ns()}", all_models=True)
        if budget_micros is not None:
            row.limits.budget_micros = budget_micros
        if rpm is not None:
            row.limits.requests_per_minute = rpm
        created = await self.admin.keys.CreateVirtualKey(keys_pb2.CreateVirtualKeyRequest(key=row),
                                                         metadata=self.admin.metadata)
        return str(created.secret)


async def provision(admin: Provisioner, fake: FakeProvider) -> BatchOrg:
    """A fresh enterprise-tier org with ``MODEL`` on ``fake`` and an all-models key."""
    org = await admin.create_org(tier="enterprise")
    await admin.create_credential(org.id, "openai", fake.secret("openai"), name="openai-cred")
    await admin.create_model(org.id, MODEL, "openai", SLUG, fake.base_url("openai"), "openai-cred", pricing=PRICES)
    _, key = await admin.create_key(org.id)
    return BatchOrg(admin, org.id, key)


def sdk(gateway: str, key: str) -> openai.AsyncOpenAI:
    """The official SDK on one node, no retries."""
    return openai.AsyncOpenAI(api_key=key, base_url=gateway + "/v1", max_retries=0, timeout=30)


def jsonl(lines: int = 2, model: str = MODEL) -> bytes:
    """A batch input file of ``lines`` chat requests naming ``model``."""
    return b"".join(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": model, "messages": [{"role": "user", "content": f"line {i}"}]}}
                               ).encode() + b"\n" for i in range(lines))


async def new_batch(client: openai.AsyncOpenAI) -> openai.types.Batch:
    """A batch of a fresh input file, created through the gateway."""
    source = await client.files.create(file=("in.jsonl", jsonl()), purpose="batch")
    return await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")


async def ledger_entry(cp: ControlPlaneProcess, org_id: str, batch_id: str) -> tuple[node_pb2.ProviderObject, bool]:
    """The control plane's record of a batch, and whether a claim of its usage would still win now."""
    async with grpc.aio.insecure_channel(cp.address) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        md = (("authorization", f"Bearer {cp.node_token}"),)
        got = await stub.GetObject(node_pb2.GetObjectRequest(org_id=org_id, kind=node_pb2.OBJECT_KIND_BATCH,
                                                             id=batch_id), metadata=md, timeout=10)
        claim = await stub.ClaimBatchUsage(node_pb2.GetObjectRequest(org_id=org_id, kind=node_pb2.OBJECT_KIND_BATCH,
                                                                     id=batch_id), metadata=md, timeout=10)
        return got, claim.claimed
