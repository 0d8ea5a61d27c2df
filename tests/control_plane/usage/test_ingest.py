"""ingest_batch: one transaction per batch, idempotent on request id, rollups only for inserted rows."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store.tables import UsageRecordRow
from control_plane.usage import ingest_batch
from control_plane.usage.records import BadRecord, prepare
from odock.v1 import common_pb2, node_pb2
from tests.control_plane.usage.env import T0, batch, count_records, record, rollups_match_records

Sessions = async_sessionmaker[AsyncSession]


async def test_batch_is_stored_and_acked_with_counts(sessions: Sessions) -> None:
    records = [record(input_tokens=i, output_tokens=2 * i, cost_picos=7 * i) for i in range(1, 8)]
    ack = await ingest_batch(sessions, batch(records, sequence=42))
    assert (ack.sequence, ack.accepted, ack.duplicates, ack.rejected) == (42, 7, 0, 0)
    assert await count_records(sessions) == 7
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed
    # One rollup row: same org/hour/key/model/outcome; sums are 1+..+7 = 28.
    assert rolled == [("org_a", T0.timestamp() // 3600, "key_1", "gpt", common_pb2.OUTCOME_COMPLETE,
                       7, 28, 56, 0, 0, 196)]  # fmt: skip


async def test_stored_row_keeps_every_reported_field(sessions: Sessions) -> None:
    sent = record(request_id="req-fields", attempt=3, node_id="node-x", streamed=True, cached=4, reasoning=6,
                  time_to_first_byte_us=321, flags=3, outcome=common_pb2.OUTCOME_PARTIAL)  # fmt: skip
    sent.time.FromDatetime(T0 + timedelta(minutes=5, microseconds=123456))
    await ingest_batch(sessions, batch([sent], node_id="batch-node"))
    async with sessions() as s:
        row = await s.get(UsageRecordRow, "req-fields")
    assert row is not None
    assert (row.attempt, row.node_id, row.streamed, row.cached_input_tokens, row.reasoning_tokens) == (
        3, "node-x", True, 4, 6)  # fmt: skip
    assert (row.time_to_first_byte_us, row.flags, row.outcome, row.http_status) == (321, 3, 2, 200)
    assert row.time == T0 + timedelta(minutes=5, microseconds=123456)
    assert row.receive_time > row.time


async def test_node_id_defaults_to_the_batch_node(sessions: Sessions) -> None:
    await ingest_batch(sessions, batch([record(request_id="req-n")], node_id="node-7"))
    async with sessions() as s:
        assert (await s.get(UsageRecordRow, "req-n")).node_id == "node-7"  # type: ignore[union-attr]


async def test_replayed_batch_is_all_duplicates_and_totals_unchanged(sessions: Sessions) -> None:
    b = batch([record() for _ in range(5)], sequence=1)
    first = await ingest_batch(sessions, b)
    before = await rollups_match_records(sessions)
    again = await ingest_batch(sessions, b)
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (again.sequence, again.accepted, again.duplicates, again.rejected) == (1, 0, 5, 0)
    assert await count_records(sessions) == 5
    assert await rollups_match_records(sessions) == before


async def test_replay_with_another_attempt_and_node_is_still_a_duplicate(sessions: Sessions) -> None:
    original = record(request_id="req-r", attempt=0, input_tokens=100)
    await ingest_batch(sessions, batch([original], node_id="node-1"))
    replay = record(request_id="req-r", attempt=1, node_id="node-2", input_tokens=999)
    ack = await ingest_batch(sessions, batch([replay], node_id="node-2"))
    assert (ack.accepted, ack.duplicates) == (0, 1)
    async with sessions() as s:
        row = await s.get(UsageRecordRow, "req-r")
    assert row is not None and (row.attempt, row.node_id, row.input_tokens) == (0, "node-1", 100)
    rolled, _ = await rollups_match_records(sessions)
    assert [r[6] for r in rolled] == [100]  # input tokens counted once, from the first copy


async def test_partial_overlap_counts_only_new_records(sessions: Sessions) -> None:
    old = [record(input_tokens=1) for _ in range(4)]
    new = [record(input_tokens=10) for _ in range(3)]
    await ingest_batch(sessions, batch(old))
    ack = await ingest_batch(sessions, batch([*old[2:], *new], sequence=2))
    assert (ack.accepted, ack.duplicates) == (3, 2)
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed
    assert rolled[0][5:7] == (7, 34)  # 7 requests, 4*1 + 3*10 input tokens


async def test_duplicate_within_one_batch_counts_once(sessions: Sessions) -> None:
    r = record(request_id="req-twice")
    ack = await ingest_batch(sessions, batch([r, r, record()]))
    assert (ack.accepted, ack.duplicates) == (2, 1)
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed and rolled[0][5] == 2


async def test_bad_records_are_rejected_without_failing_the_batch(sessions: Sessions) -> None:
    no_time = node_pb2.UsageRecord(request_id="req-nt", org_id="org_a")
    bad = [
        record(request_id=""),
        record(org_id=""),
        no_time,
        record(input_tokens=-1),
        record(model="m\x00odel"),
        record(request_id="r" * 129),
        record(http_status=70000),
    ]
    good = [record(), record()]
    ack = await ingest_batch(sessions, batch([*bad, *good]))
    assert (ack.accepted, ack.duplicates, ack.rejected) == (2, 0, len(bad))
    assert await count_records(sessions) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"request_id": ""}, "request_id: required"),
        ({"org_id": ""}, "org_id: required"),
        ({"cost_picos": -5}, "cost_picos: negative"),
        ({"output_tokens": 2**60}, "output_tokens: implausibly large"),
        ({"endpoint": "/x" * 100}, "endpoint: longer than 128"),
        ({"key_id": "k\x00"}, "key_id: contains a NUL"),
    ],
)
def test_prepare_names_the_field(change: dict[str, object], message: str) -> None:
    r = record(request_id="req-p")
    for name, value in change.items():
        setattr(r, name, value)
    with pytest.raises(BadRecord, match=message):
        prepare(r, "n", T0)


async def test_empty_batch_is_acked(sessions: Sessions) -> None:
    ack = await ingest_batch(sessions, batch([], sequence=9))
    assert (ack.sequence, ack.accepted, ack.duplicates, ack.rejected) == (9, 0, 0, 0)


async def test_large_batch_spans_several_statements(sessions: Sessions) -> None:
    records = [
        record(key_id=f"key_{i % 7}", model=f"m{i % 3}", when=T0 + timedelta(minutes=i)) for i in range(1203)
    ]
    ack = await ingest_batch(sessions, batch(records))
    assert ack.accepted == 1203
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed
    assert sum(r[5] for r in rolled) == 1203


async def test_concurrent_batches_from_two_nodes_store_each_record_once(sessions: Sessions) -> None:
    # Both nodes send overlapping sets (a replay racing the original) in opposite orders.
    shared = [record(key_id=f"key_{i % 3}", when=T0 + timedelta(minutes=i)) for i in range(300)]
    only_a = [record() for _ in range(50)]
    only_b = [record() for _ in range(70)]
    batches_a = [batch([*shared[i::4], *only_a[i::4]], sequence=i, node_id="node-a") for i in range(4)]
    batches_b = [
        batch([*reversed(shared[i::4]), *only_b[i::4]], sequence=i, node_id="node-b") for i in range(4)
    ]

    async def send(batches: list[node_pb2.UsageBatch]) -> list[node_pb2.UsageAck]:
        return [await ingest_batch(sessions, b) for b in batches]

    acks_a, acks_b = await asyncio.gather(send(batches_a), send(batches_b))
    acks = [*acks_a, *acks_b]
    assert sum(a.accepted for a in acks) == 300 + 50 + 70
    assert sum(a.duplicates for a in acks) == 300
    assert await count_records(sessions) == 420
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed
    assert sum(r[5] for r in rolled) == 420


async def test_many_concurrent_writers_to_the_same_rollup_rows(sessions: Sessions) -> None:
    # Eight writers, all bumping the same few rollup keys: totals must add up exactly.
    batches = [batch([record(key_id=f"key_{j % 2}", input_tokens=j) for j in range(40)], sequence=i)
               for i in range(8)]  # fmt: skip
    acks = await asyncio.gather(*(ingest_batch(sessions, b) for b in batches))
    assert sum(a.accepted for a in acks) == 320
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed
    assert sum(r[6] for r in rolled) == 8 * sum(range(40))


async def test_rows_hold_no_model_or_pricing_data(sessions: Sessions) -> None:
    columns = set(UsageRecordRow.__table__.c.keys())
    assert not any("price" in c or "per_mtok" in c or "base_url" in c or "credential" in c for c in columns)
    await ingest_batch(sessions, batch([record()]))
    async with sessions() as s:
        assert len((await s.execute(select(UsageRecordRow))).all()) == 1
