"""Ingest scheduling (control_plane/usage/priority.py): bounded slices, governance first, worker threads."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.store.background import BackgroundDatabase
from control_plane.store.repositories import usage_writes
from control_plane.usage import ingest_batch
from control_plane.usage.priority import GovernanceFirst
from tests.control_plane.usage.env import batch, count_records, record, rollups_match_records


async def test_a_large_batch_is_stored_in_bounded_slices(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]
) -> None:
    commits: list[int] = []
    event.listen(engine.sync_engine, "commit", lambda _conn: commits.append(1))
    priority = GovernanceFirst(1, slice_rows=100)
    ack = await ingest_batch(sessions, batch([record() for _ in range(350)]), priority)
    assert (ack.accepted, ack.duplicates, ack.rejected) == (350, 0, 0)
    assert len(commits) == 4  # 100 + 100 + 100 + 50
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed


async def test_background_database_stores_batches_off_the_loop(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2)
    try:
        records = [record() for _ in range(600)]
        first = await ingest_batch(store, batch(records), GovernanceFirst(2))
        again = await ingest_batch(store, batch(records[:300]), GovernanceFirst(2))
    finally:
        await asyncio.to_thread(store.close)
    assert (first.accepted, again.accepted, again.duplicates) == (600, 0, 300)
    assert await count_records(sessions) == 600
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed


async def test_sqlite_ingest_yields_its_core_before_every_statement(
    migrated_db_url: str, sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite runs in the control plane's process: a slice is cut into statements of at most
    SQLITE_ROWS_PER_CALL records, and the thread yields its core before each, so a process sharing
    the core waits for one statement, not a slice (issue 16). PostgreSQL runs a slice's one
    statement in its own server process: nothing to yield there."""
    seen: list[str | int] = []
    monkeypatch.setattr(os, "sched_yield", lambda: seen.append("yield"))
    store = BackgroundDatabase.open(migrated_db_url, 2)

    def executed(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().startswith("INSERT INTO usage_records"):
            seen.append(len(params) // len(usage_writes.RECORDS.columns) if store.engine.name == "sqlite" else 0)

    event.listen(store.engine, "before_cursor_execute", executed)
    try:
        ack = await ingest_batch(store, batch([record() for _ in range(500)]), GovernanceFirst(1))
    finally:
        await asyncio.to_thread(store.close)
    assert ack.accepted == 500
    statements = [n for n in seen if isinstance(n, int)]
    if store.engine.name == "sqlite":
        assert sum(statements) == 500 and max(statements) <= usage_writes.SQLITE_ROWS_PER_CALL < 500
        inserts = [i for i, n in enumerate(seen) if isinstance(n, int)]
        assert all(seen[i - 1] == "yield" for i in inserts), seen  # every insert right after a yield
    else:
        assert seen == [0, 0]  # one statement per 250-record slice, no yield
    assert await count_records(sessions) == 500
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed


async def test_ingest_slices_wait_while_governance_runs_but_never_starve() -> None:
    priority = GovernanceFirst(1, max_defer=0.5)
    started: list[float] = []

    async def slice_() -> None:
        async with priority.ingest_slice():
            started.append(time.monotonic())

    began = time.monotonic()
    async with priority.governance():
        waiting = asyncio.ensure_future(slice_())
        await asyncio.sleep(0.1)
        assert not started  # held back while a lease is in flight
    await waiting
    assert 0.1 <= started[0] - began < 0.4  # ... and released as soon as it ended

    async def overlapping_governance() -> None:
        async with priority.governance():
            while True:  # a new call always starts before the previous one ends
                async with priority.governance():
                    await asyncio.sleep(0.01)

    load = asyncio.ensure_future(overlapping_governance())
    await asyncio.sleep(0.02)
    try:
        began = time.monotonic()
        await asyncio.wait_for(slice_(), 5)
        assert 0.45 <= started[1] - began < 2.0  # a lease load that never pauses delays ingestion, bounded
    finally:
        load.cancel()


async def test_ingest_concurrency_is_bounded() -> None:
    priority = GovernanceFirst(2)
    running = peak = 0

    async def slice_(_: Any) -> None:
        nonlocal running, peak
        async with priority.ingest_slice():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(slice_(i) for i in range(10)))
    assert peak == 2
