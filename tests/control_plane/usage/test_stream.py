"""NodeService.ReportUsage through UsageIngestor over real gRPC: acks in order, after commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.usage import StoreUnavailable, ingest_batch
from odock.v1 import node_pb2
from tests.control_plane.usage.env import UsageEnv, batch, count_records, record, rollups_match_records


async def test_acks_arrive_in_order_after_commit(env: UsageEnv) -> None:
    sizes = [3, 0, 5, 2]
    outbox: asyncio.Queue[node_pb2.UsageBatch | None] = asyncio.Queue()

    async def requests() -> AsyncIterator[node_pb2.UsageBatch]:
        while (item := await outbox.get()) is not None:
            yield item

    call = env.node.ReportUsage(requests(), metadata=env.node_md)
    stored = 0
    for seq, size in enumerate(sizes, start=1):
        await outbox.put(batch([record() for _ in range(size)], sequence=seq))
        ack = await call.read()
        assert isinstance(ack, node_pb2.UsageAck)
        assert (ack.sequence, ack.accepted, ack.duplicates) == (seq, size, 0)
        stored += size
        # The ack means committed: another connection sees every row already.
        assert await count_records(env.sessions) == stored
    await outbox.put(None)
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_a_batch_resent_on_a_new_stream_is_all_duplicates(env: UsageEnv) -> None:
    b = batch([record() for _ in range(4)], sequence=7)
    first = [a async for a in env.node.ReportUsage(iter([b]), metadata=env.node_md)]
    # The ack was "lost": the node reconnects and sends the same batch again.
    second = [a async for a in env.node.ReportUsage(iter([b]), metadata=env.node_md)]
    assert [(a.accepted, a.duplicates) for a in first] == [(4, 0)]
    assert [(a.sequence, a.accepted, a.duplicates) for a in second] == [(7, 0, 4)]
    assert await count_records(env.sessions) == 4
    rolled, recomputed = await rollups_match_records(env.sessions)
    assert rolled == recomputed and rolled[0][5] == 4


async def test_two_nodes_streaming_at_once(env: UsageEnv) -> None:
    shared = [record() for _ in range(40)]

    async def node(name: str, extra: int) -> list[node_pb2.UsageAck]:
        own = [record() for _ in range(extra)]
        batches = [batch([*shared[i::5], *own[i::5]], sequence=i, node_id=name) for i in range(5)]
        return [a async for a in env.node.ReportUsage(iter(batches), metadata=env.node_md)]

    acks = [a for group in await asyncio.gather(node("n1", 10), node("n2", 15)) for a in group]
    assert sum(a.accepted for a in acks) == 65 and sum(a.duplicates for a in acks) == 40
    assert await count_records(env.sessions) == 65


async def test_admin_tokens_cannot_report_usage(env: UsageEnv) -> None:
    call = env.node.ReportUsage(iter([batch([record()])]), metadata=env.su)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await count_records(env.sessions) == 0


# PostgreSQL: nothing listens there; SQLite: a database without the schema ("no such table").
@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/nothing", "sqlite:///{tmp}/empty.db"])
async def test_unreachable_store_is_unavailable_and_nothing_acked(url: str, tmp_path: Path) -> None:
    engine = make_engine(
        url.format(tmp=tmp_path), **({"pool_timeout": 2} if url.startswith("postgresql") else {})
    )
    try:
        with pytest.raises(StoreUnavailable) as info:
            await ingest_batch(make_sessionmaker(engine), batch([record()]))
    finally:
        await engine.dispose()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "not stored" in info.value.message
