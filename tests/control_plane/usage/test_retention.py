"""Usage retention (control_plane/usage/retention.py) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store.background import BackgroundDatabase
from control_plane.store.repositories import usage_writes
from control_plane.store.tables import UsageRecordRow, UsageRollupRow
from control_plane.usage import ingest_batch
from control_plane.usage.priority import GovernanceFirst
from control_plane.usage.retention import RETENTION_LOCK_KEY, RetentionPolicy, RetentionTask, prune
from tests.control_plane.usage.env import batch, record

NOW = datetime.now(UTC).replace(microsecond=0)
T = TypeVar("T")


async def _hours(sessions: async_sessionmaker[AsyncSession]) -> list[int]:
    async with sessions() as s:
        return sorted(set((await s.scalars(select(UsageRollupRow.hour))).all()))


async def _record_ids(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with sessions() as s:
        return set((await s.scalars(select(UsageRecordRow.request_id))).all())


async def test_old_records_go_recent_stay_rollups_outlive_records(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    ages = {"ancient": 500, "old": 40, "recent": 10, "now": 0}
    store = BackgroundDatabase.open(migrated_db_url, 2)
    try:
        for name, days in ages.items():
            recs = [
                record(request_id=f"{name}-{i}", when=NOW - timedelta(days=days, hours=1)) for i in range(3)
            ]
            assert (await ingest_batch(store, batch(recs))).accepted == 3
        report = await prune(store, RetentionPolicy(record_days=30, rollup_days=400), GovernanceFirst(1))
    finally:
        await asyncio.to_thread(store.close)
    assert (report.records, report.rollups) == (6, 1)  # ancient + old records; the ancient hour's rollup
    assert await _record_ids(sessions) == {f"{n}-{i}" for n in ("recent", "now") for i in range(3)}
    hour = int(NOW.timestamp()) // 3600
    assert await _hours(sessions) == [hour - 1 - 24 * d for d in (40, 10, 0)]  # 40 days: rollup kept


async def test_a_backlog_is_deleted_in_bounded_batches(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2)
    try:
        for b in range(5):
            recs = [record(key_id=f"k{i}", request_id=f"bk-{b}-{i}", when=NOW - timedelta(days=50, hours=i))
                    for i in range(500)]  # fmt: skip
            await ingest_batch(store, batch(recs))
        await ingest_batch(store, batch([record(request_id="keep", when=NOW)]))
        policy = RetentionPolicy(record_days=30, rollup_days=45, batch_rows=600, pause_seconds=0.01)
        report = await prune(store, policy, GovernanceFirst(1))
    finally:
        await asyncio.to_thread(store.close)
    assert report.records == 2500 and report.rollups == 500
    assert max(report.batches) <= 600 and len(report.batches) == 5 + 1  # 4x600 + 100 records, 500 rollups
    assert await _record_ids(sessions) == {"keep"}
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(UsageRollupRow)) == 1


async def test_sqlite_deletes_in_statements_yielding_the_core_before_each(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite deletes in the control plane's process: a batch of ``batch_rows`` is cut into statements
    of at most SQLITE_DELETE_ROWS with a yield of the core before each; PostgreSQL deletes a batch in
    one statement of its server, with no yield (issue 16, like the inserts)."""
    monkeypatch.setattr(usage_writes, "SQLITE_DELETE_ROWS", 400)
    store = BackgroundDatabase.open(migrated_db_url, 2)
    seen: list[str] = []
    try:
        recs = [record(request_id=f"old-{i}", when=NOW - timedelta(days=50, seconds=i)) for i in range(1000)]
        await ingest_batch(store, batch(recs))
        monkeypatch.setattr(os, "sched_yield", lambda: seen.append("yield"))

        def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().startswith("DELETE FROM usage_records"):
                seen.append("delete")

        event.listen(store.engine, "before_cursor_execute", executed)
        policy = RetentionPolicy(record_days=30, rollup_days=0, batch_rows=900, pause_seconds=0.01)
        report = await prune(store, policy, GovernanceFirst(1))
    finally:
        await asyncio.to_thread(store.close)
    assert report.records == 1000 and report.batches == [900, 100]
    assert await _record_ids(sessions) == set()
    if store.engine.name == "sqlite":
        # 900: 400 + 400 + 100; then 100: one statement that finds fewer than it may delete
        assert seen == ["yield", "delete"] * 4
    else:
        assert seen == ["delete"] * 2


async def test_the_task_survives_a_failed_run_and_keeps_pruning(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2)
    calls = 0
    real = store.transaction

    async def flaky(fn: Callable[[Connection], T]) -> T:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk hiccup")
        return await real(fn)

    task = RetentionTask(store, RetentionPolicy(30, 400), None, interval=0.05, retry_seconds=0.05)
    try:
        await ingest_batch(store, batch([record(request_id="gone", when=NOW - timedelta(days=40))]))
        store.transaction = flaky  # type: ignore[method-assign]
        task.start()
        for _ in range(200):
            if task.runs:
                break
            await asyncio.sleep(0.02)
    finally:
        await task.stop()
        await asyncio.to_thread(store.close)
    assert task.runs >= 1 and calls >= 2  # the first run failed, a later one pruned
    assert await _record_ids(sessions) == set()


async def test_one_replica_prunes_at_a_time_on_postgresql(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2)
    try:
        await ingest_batch(store, batch([record(request_id="old", when=NOW - timedelta(days=40))]))
        with store.engine.connect() as other_replica:
            if store.is_postgres:  # another replica is mid-batch: it holds the retention lock
                other_replica.execute(text("SELECT pg_advisory_lock(:k)"), {"k": RETENTION_LOCK_KEY})
            held = await prune(store, RetentionPolicy(30, 400))
            if store.is_postgres:
                other_replica.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": RETENTION_LOCK_KEY})
        after = await prune(store, RetentionPolicy(30, 400))
    finally:
        await asyncio.to_thread(store.close)
    if store.is_postgres:
        assert held.yielded_to_replica and held.records == 0
        assert after.records == 1 and not after.yielded_to_replica
    else:  # SQLite: one control plane, no lock to wait for
        assert held.records == 1 and not held.yielded_to_replica
    assert await _record_ids(sessions) == set()
