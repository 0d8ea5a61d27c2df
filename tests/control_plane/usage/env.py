"""An in-process gRPC server with only the usage pieces: the real AuthInterceptor,
UsageServicer, and a NodeService whose only method is ReportUsage (delegating to
UsageIngestor, the way NodeServicer does) — so these tests need nothing else
of the control plane. Plus record factories and direct DB helpers."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.interceptors import AuthInterceptor
from control_plane.services.usage import UsageServicer
from control_plane.settings import Settings
from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.store.tables import AdminTokenRow, OrgRow, UsageRecordRow, UsageRollupRow
from control_plane.usage import UsageIngestor
from odock import keyformat
from odock.v1 import common_pb2, node_pb2, node_pb2_grpc, usage_pb2_grpc
from tests.support.secrets import PlaneSecrets

Metadata = tuple[tuple[str, str], ...]
T0 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)  # a Sunday, midnight UTC
_ids = itertools.count(1)


def bearer(token: str) -> Metadata:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def record(
    org_id: str = "org_a",
    *,
    request_id: str | None = None,
    when: datetime = T0,
    key_id: str = "key_1",
    model: str = "gpt",
    outcome: int = common_pb2.OUTCOME_COMPLETE,
    input_tokens: int = 10,
    output_tokens: int = 5,
    cached: int = 0,
    reasoning: int = 0,
    cost_picos: int = 1000,
    **extra: Any,
) -> node_pb2.UsageRecord:
    """A usage record with deterministic defaults; a fresh request id unless given."""
    fields: dict[str, Any] = {
        "request_id": f"req-{next(_ids):08d}" if request_id is None else request_id,
        "org_id": org_id, "key_id": key_id, "model_name": model, "upstream_slug": f"{model}-slug",
        "family": common_pb2.PROVIDER_FAMILY_OPENAI, "endpoint": "/v1/chat/completions", "http_status": 200,
        "outcome": outcome, "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cached_input_tokens": cached, "reasoning_tokens": reasoning, "cost_picos": cost_picos,
        "latency_us": 1500, "upstream_latency_us": 1200,
    }  # fmt: skip
    fields.update(extra)
    msg = node_pb2.UsageRecord(**fields)
    msg.time.FromDatetime(when)
    return msg


def batch(
    records: Iterable[node_pb2.UsageRecord], sequence: int = 1, node_id: str = "node-1"
) -> node_pb2.UsageBatch:
    """A batch of ``records`` from ``node_id``."""
    return node_pb2.UsageBatch(node_id=node_id, sequence=sequence, records=list(records))


async def count_records(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Rows in usage_records."""
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(UsageRecordRow)) or 0)


async def rollups_match_records(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[Any], list[Any]]:
    """(rollup rows, the same aggregate recomputed from the raw records), both sorted."""
    r = UsageRecordRow
    async with sessions() as s:
        u = UsageRollupRow
        key = (u.org_id, u.hour, u.key_id, u.model_name, u.outcome)
        sums = (
            u.requests,
            u.input_tokens,
            u.output_tokens,
            u.cached_input_tokens,
            u.reasoning_tokens,
            u.cost_picos,
        )
        rolled = (await s.execute(select(*key, *sums).order_by(*key))).all()
        raw = (await s.execute(select(r).order_by(r.request_id))).scalars().all()
    agg: dict[tuple[Any, ...], list[int]] = {}
    for row in raw:
        bucket = (row.org_id, int(row.time.timestamp()) // 3600, row.key_id, row.model_name, row.outcome)
        acc = agg.setdefault(bucket, [0] * 6)
        for i, v in enumerate((1, row.input_tokens, row.output_tokens, row.cached_input_tokens,
                               row.reasoning_tokens, row.cost_picos)):  # fmt: skip
            acc[i] += v
    recomputed = [(*k, *v) for k, v in sorted(agg.items())]
    return [tuple(x) for x in rolled], recomputed


class _ReportUsageOnly(node_pb2_grpc.NodeServiceServicer):
    def __init__(self, ingestor: UsageIngestor) -> None:
        self._ingestor = ingestor

    def ReportUsage(self, request_iterator: Any, context: Any) -> AsyncIterator[node_pb2.UsageAck]:
        return self._ingestor.handle(request_iterator)


@dataclass
class UsageEnv:
    """A running usage-only server on 127.0.0.1:0 with stubs and secrets."""

    address: str
    channel: grpc.aio.Channel
    sessions: async_sessionmaker[AsyncSession]
    secrets: PlaneSecrets
    usage: usage_pb2_grpc.UsageServiceAsyncStub
    node: node_pb2_grpc.NodeServiceAsyncStub

    @property
    def su(self) -> Metadata:
        return bearer(self.secrets.admin_token)

    @property
    def node_md(self) -> Metadata:
        return bearer(self.secrets.node_token)

    async def org_admin(self, org_id: str) -> Metadata:
        """Create org ``org_id`` (if needed) with an admin token; its metadata."""
        token = keyformat.generate(keyformat.ADMIN_TOKEN_PREFIX)
        async with self.sessions.begin() as s:
            if await s.get(OrgRow, org_id) is None:
                s.add(OrgRow(id=org_id, name=org_id.replace("_", "-"), tier="free", outage_policy=0,
                             default_models={}, labels={}))  # fmt: skip
                await s.flush()
            s.add(AdminTokenRow(id=f"tok_{next(_ids)}", org_id=org_id, name="t", revoked=False, last4=token[-4:],
                                digest=keyformat.digest(self.secrets.pepper, token)))  # fmt: skip
        return bearer(token)


@contextlib.asynccontextmanager
async def open_usage_env(db_url: str) -> AsyncIterator[UsageEnv]:
    """Serve UsageService and NodeService.ReportUsage over ``db_url`` (already migrated)."""
    secrets = PlaneSecrets()
    settings = Settings(
        listen="127.0.0.1:0", database_url=db_url, key_pepper=secrets.pepper, admin_token=secrets.admin_token,
        node_tokens=(secrets.node_token,), migrate=False,
    )  # fmt: skip
    engine = make_engine(db_url)
    sessions = make_sessionmaker(engine)
    server = grpc.aio.server(interceptors=[AuthInterceptor(settings, sessions)])
    usage_pb2_grpc.add_UsageServiceServicer_to_server(UsageServicer(sessions), server)
    # Only ReportUsage is implemented: the base class answers UNIMPLEMENTED for the rest.
    node = _ReportUsageOnly(UsageIngestor(sessions))  # type: ignore[abstract]
    node_pb2_grpc.add_NodeServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield UsageEnv(
            address=f"127.0.0.1:{port}", channel=channel, sessions=sessions, secrets=secrets,
            usage=usage_pb2_grpc.UsageServiceStub(channel), node=node_pb2_grpc.NodeServiceStub(channel),
        )  # fmt: skip
    finally:
        await channel.close()
        await server.stop(None)
        await engine.dispose()


@pytest.fixture
async def env(migrated_db_url: str) -> AsyncIterator[UsageEnv]:
    """Usage-only gRPC server (real auth) over a fresh migrated database."""
    async with open_usage_env(migrated_db_url) as e:
        yield e
