"""Usage storage (store/repositories/usage.py and usage_writes.py) on both backends: records
inserted once by request id, rollup deltas added up, totals and record pages, retention deletes."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from control_plane.store.repositories import usage, usage_writes
from control_plane.store.tables import UsageRecordRow, UsageRollupRow
from odock.v1 import common_pb2

Sessions = async_sessionmaker[AsyncSession]
T = TypeVar("T")
COMPLETE, ERROR = common_pb2.OUTCOME_COMPLETE, common_pb2.OUTCOME_ERROR
COUNTERS = usage_writes.ROLLUP_SUMS[1:]
LOCK_KEY = 4242
BASE = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)
BASE_HOUR = int(BASE.timestamp() // 3600)


def _record(request_id: str, when: datetime, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "request_id": request_id, "attempt": 1, "node_id": "n1", "org_id": "org_a", "key_id": "key_1",
        "model_name": "m1", "upstream_slug": "up", "family": 1, "endpoint": "/v1/chat/completions",
        "http_status": 200, "outcome": COMPLETE, "streamed": False, "input_tokens": 10, "output_tokens": 5,
        "cached_input_tokens": 0, "reasoning_tokens": 0, "cost_picos": 100, "latency_us": 1000,
        "upstream_latency_us": 900, "time_to_first_byte_us": 0, "time": when, "flags": 0,
        "receive_time": when, "client_request_id": None, "error_code": None, "deployment": None,
        "upstream_attempts": None, "requested_model": None, "audio_milliseconds": None, "input_characters": None,
        "batch_id": None,
    }  # fmt: skip
    row.update(values)
    assert row.keys() == {c.name for c in usage_writes.RECORDS.columns}, "every column, no other"
    return row


def _delta(
    hour: int, *, org_id: str = "org_a", key_id: str = "key_1", outcome: int = COMPLETE, requests: int = 1,
    **sums: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {"org_id": org_id, "hour": hour, "key_id": key_id, "model_name": "m1",
                           "outcome": outcome, "requests": requests}  # fmt: skip
    row.update({name: sums.get(name, 0) for name in COUNTERS})
    return row


async def _sync(sessions: Sessions, fn: Callable[[Connection], T]) -> T:
    """Run a connection-level write in one committed transaction, as ingestion does through run_sync."""
    async with sessions.begin() as s:

        def call(sync: Session) -> T:
            return fn(sync.connection())

        return await s.run_sync(call)


async def test_records_are_inserted_once_by_request_id(sessions: Sessions) -> None:
    first = [_record("req_a", BASE), _record("req_b", BASE, attempt=1)]
    assert await _sync(sessions, functools.partial(usage_writes.insert_records, rows=first)) == {"req_a", "req_b"}
    again = [_record("req_b", BASE, attempt=2, node_id="n2"), _record("req_c", BASE)]
    assert await _sync(sessions, functools.partial(usage_writes.insert_records, rows=again)) == {"req_c"}
    # More rows than one SQLite statement takes, mixed with stored ones.
    many = [_record(f"req_{i:05d}", BASE) for i in range(2 * usage_writes.SQLITE_ROWS_PER_CALL + 5)]
    inserted = await _sync(sessions, functools.partial(usage_writes.insert_records, rows=[*first, *many]))
    assert inserted == {r["request_id"] for r in many}
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(UsageRecordRow)) == 3 + len(many)
        kept = await usage.get_record(s, "req_b")
        assert kept is not None and (kept.attempt, kept.node_id) == (1, "n1")  # the first copy wins
        assert await usage.get_record(s, "req_none") is None


async def test_rollup_deltas_add_up_on_their_key(sessions: Sessions) -> None:
    await _sync(sessions, functools.partial(usage_writes.add_rollups, deltas=[]))  # nothing to do
    one = [_delta(BASE_HOUR, input_tokens=10, cost_picos=7), _delta(BASE_HOUR, key_id="key_2", output_tokens=3)]
    await _sync(sessions, functools.partial(usage_writes.add_rollups, deltas=one))
    two = [_delta(BASE_HOUR, requests=2, input_tokens=5, reasoning_tokens=1, cost_picos=3)]
    await _sync(sessions, functools.partial(usage_writes.add_rollups, deltas=two))
    async with sessions() as s:
        rows = (await s.scalars(select(UsageRollupRow).order_by(UsageRollupRow.key_id))).all()
    assert [(r.key_id, r.requests, r.input_tokens, r.output_tokens, r.reasoning_tokens, r.cost_picos)
            for r in rows] == [("key_1", 3, 15, 0, 1, 10), ("key_2", 1, 0, 3, 0, 0)]  # fmt: skip


async def _totals(sessions: Sessions, **query: Any) -> list[tuple[Any, ...]]:
    args: dict[str, Any] = {"start_hour": BASE_HOUR - 48, "end_hour": BASE_HOUR + 48, "filters": {},
                            "bucket_hours": 1, "group_by": (), "outcomes": (COMPLETE, ERROR),
                            "counters": COUNTERS, "after": None, "limit": 100}  # fmt: skip
    args.update(query)
    async with sessions() as s:
        return [tuple(row) for row in await usage.rollup_totals(s, **args)]


async def test_rollup_totals_group_filter_pivot_and_page(sessions: Sessions) -> None:
    next_day = BASE_HOUR + 3  # 2026-12-01T01:00Z
    deltas = [
        _delta(BASE_HOUR, input_tokens=10, cost_picos=100, audio_milliseconds=1500),
        _delta(BASE_HOUR, outcome=ERROR, requests=2),
        _delta(BASE_HOUR + 1, key_id="key_2", output_tokens=4),
        _delta(next_day, input_tokens=1),
        _delta(next_day, org_id="org_b", input_tokens=1000),
    ]
    await _sync(sessions, functools.partial(usage_writes.add_rollups, deltas=deltas))
    org_a = {"org_id": "org_a", "key_id": None, "model_name": None}
    # Per hour: outcomes pivoted (complete, error), all requests, then the counters.
    hours = await _totals(sessions, filters=org_a)
    assert hours == [
        (BASE_HOUR, 1, 2, 3, 10, 0, 0, 0, 100, 1500, 0),
        (BASE_HOUR + 1, 1, 0, 1, 0, 4, 0, 0, 0, 0, 0),
        (next_day, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0),
    ]
    day_start = BASE_HOUR - BASE_HOUR % 24
    days = await _totals(sessions, filters=org_a, bucket_hours=24)
    assert [(r[0], r[3]) for r in days] == [(day_start, 4), (day_start + 24, 1)]
    by_key = await _totals(sessions, filters=org_a, bucket_hours=None, group_by=("key_id",))
    assert [(r[0], r[3], r[4]) for r in by_key] == [("key_1", 4, 11), ("key_2", 1, 0)]
    everything = await _totals(sessions, bucket_hours=None)
    assert [r[:4] for r in everything] == [(4, 2, 6, 1011)]  # no groups: one row
    assert await _totals(sessions, filters={"key_id": "key_2"}, bucket_hours=None) == [
        (1, 0, 1, 0, 4, 0, 0, 0, 0, 0)
    ]
    window = await _totals(sessions, start_hour=BASE_HOUR + 1, end_hour=next_day, filters=org_a)
    assert [r[0] for r in window] == [BASE_HOUR + 1]
    # Keyset pages over the group columns.
    page = await _totals(sessions, group_by=("org_id", "key_id"), limit=2)
    assert [r[:3] for r in page] == [(BASE_HOUR, "org_a", "key_1"), (BASE_HOUR + 1, "org_a", "key_2")]
    rest = await _totals(sessions, group_by=("org_id", "key_id"), after=list(page[-1][:3]), limit=2)
    assert [r[:3] for r in rest] == [(next_day, "org_a", "key_1"), (next_day, "org_b", "key_1")]


async def test_record_pages_are_newest_first_with_keyset_paging(sessions: Sessions) -> None:
    rows = [
        _record("req_1", BASE),
        _record("req_2", BASE + timedelta(minutes=1)),
        _record("req_3", BASE + timedelta(minutes=1)),
        _record("req_4", BASE + timedelta(minutes=2), key_id="key_2", client_request_id="c-4"),
        _record("req_5", BASE + timedelta(minutes=3), org_id="org_b"),
    ]
    await _sync(sessions, functools.partial(usage_writes.insert_records, rows=rows))

    async def page(**query: Any) -> list[str]:
        args: dict[str, Any] = {"filters": {"org_id": "org_a"}, "start": None, "end": None, "after": None,
                                "limit": 100}  # fmt: skip
        args.update(query)
        async with sessions() as s:
            return [r.request_id for r in await usage.records_page(s, **args)]

    assert await page() == ["req_4", "req_3", "req_2", "req_1"]  # same time: request id descending
    assert await page(limit=2) == ["req_4", "req_3"]
    assert await page(after=(BASE + timedelta(minutes=1), "req_3")) == ["req_2", "req_1"]
    assert await page(start=BASE + timedelta(minutes=1), end=BASE + timedelta(minutes=2)) == ["req_3", "req_2"]
    assert await page(filters={"org_id": "org_a", "key_id": "key_2"}) == ["req_4"]
    assert await page(filters={"client_request_id": "c-4"}) == ["req_4"]
    assert await page(filters={"request_id": "req_5"}) == ["req_5"]
    assert await page(filters={}) == ["req_5", "req_4", "req_3", "req_2", "req_1"]


async def test_retention_deletes_the_oldest_first_in_bounded_batches(sessions: Sessions) -> None:
    rows = [_record(f"req_{d}", BASE - timedelta(days=d)) for d in (1, 2, 3)]
    await _sync(sessions, functools.partial(usage_writes.insert_records, rows=rows))
    deltas = [_delta(BASE_HOUR - h) for h in (1, 2, 3)]
    await _sync(sessions, functools.partial(usage_writes.add_rollups, deltas=deltas))
    cutoff = BASE - timedelta(days=1, hours=12)
    delete_records = functools.partial(usage_writes.delete_records, before=cutoff, limit=1, lock_key=LOCK_KEY)
    assert await _sync(sessions, delete_records) == 1
    async with sessions() as s:
        assert await usage.get_record(s, "req_3") is None  # the oldest went first
        assert await usage.get_record(s, "req_2") is not None
    assert await _sync(sessions, delete_records) == 1
    assert await _sync(sessions, delete_records) == 0
    async with sessions() as s:
        assert await usage.get_record(s, "req_1") is not None
    delete_rollups = functools.partial(usage_writes.delete_rollups, before_hour=BASE_HOUR - 1, limit=5,
                                       lock_key=LOCK_KEY)  # fmt: skip
    assert await _sync(sessions, delete_rollups) == 2
    async with sessions() as s:
        assert list(await s.scalars(select(UsageRollupRow.hour))) == [BASE_HOUR - 1]


async def test_retention_yields_while_another_transaction_holds_the_lock(sessions: Sessions) -> None:
    await _sync(sessions, functools.partial(usage_writes.insert_records, rows=[_record("req_old", BASE)]))
    delete = functools.partial(usage_writes.delete_records, before=BASE + timedelta(days=1), limit=10,
                               lock_key=LOCK_KEY)  # fmt: skip
    async with sessions.begin() as holder:
        if holder.get_bind().dialect.name == "postgresql":
            await holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
            assert await _sync(sessions, delete) is None  # another replica is pruning
            assert not await _sync(sessions, functools.partial(usage_writes.try_advisory_xact_lock, key=LOCK_KEY))
        else:  # SQLite: a single control plane, never contended
            assert await _sync(sessions, functools.partial(usage_writes.try_advisory_xact_lock, key=LOCK_KEY))
    assert await _sync(sessions, delete) == 1  # released at the holder's commit
