"""The change log: gap-free revisions under concurrent writers, NOTIFY only at commit."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from control_plane.store import changes
from control_plane.store.db import make_engine, make_sessionmaker
from control_plane.store.tables import ChangeRow, OrgRow, utcnow
from tests.support.postgres import PostgresServer

Sessions = async_sessionmaker[AsyncSession]


async def _record(sessions: Sessions, org_id: str = "org_a", **kw: str) -> int:
    async with sessions.begin() as s:
        return await changes.record_change(s, 1, org_id, **kw)


async def test_record_and_replay(sessions: Sessions) -> None:
    async with sessions() as s:
        assert await changes.current_revision(s) == 0
        assert await changes.oldest_revision(s) == 1
        assert await changes.changes_after(s, 0, 10) == []
    async with sessions.begin() as s:
        assert await changes.record_change(s, 3, "org_a", key_id="key_1") == 1
        assert await changes.record_change(s, 4, "org_a", model_name="gpt-4o") == 2
    assert await _record(sessions, "org_b", credential_id="cred_9") == 3
    async with sessions() as s:
        assert await changes.current_revision(s) == 3
        assert await changes.oldest_revision(s) == 1
        rows = await changes.changes_after(s, 0, 10)
        assert [(r.revision, r.kind, r.org_id) for r in rows] == [
            (1, 3, "org_a"),
            (2, 4, "org_a"),
            (3, 1, "org_b"),
        ]
        assert (rows[0].key_id, rows[1].model_name, rows[2].credential_id) == ("key_1", "gpt-4o", "cred_9")
        assert rows[0].time.tzinfo is not None
        assert [r.revision for r in await changes.changes_after(s, 1, 1)] == [2]
        assert await changes.changes_after(s, 3, 10) == []


async def test_rollback_gives_the_revision_back(sessions: Sessions) -> None:
    assert await _record(sessions) == 1
    async with sessions() as s, s.begin():
        assert await changes.record_change(s, 1, "org_a") == 2
        await s.rollback()
    assert await _record(sessions) == 2
    async with sessions() as s:
        assert [r.revision for r in await changes.changes_after(s, 0, 10)] == [1, 2]


async def test_change_rolls_back_with_the_callers_work(sessions: Sessions) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with sessions.begin() as s:
            s.add(OrgRow(id="org_a", name="a", tier="free"))
            await changes.record_change(s, 1, "org_a")
            raise Boom
    async with sessions() as s:
        assert await changes.current_revision(s) == 0
        assert await s.scalar(select(func.count()).select_from(OrgRow)) == 0
        assert await s.scalar(select(func.count()).select_from(ChangeRow)) == 0


async def test_prune_keeps_recent_and_the_newest(sessions: Sessions) -> None:
    for _ in range(3):
        await _record(sessions)
    async with sessions.begin() as s:
        assert await changes.prune(s, utcnow() - timedelta(hours=1)) == 0
    async with sessions.begin() as s:
        # Everything is older than "now + 1h"; the newest row survives so the log never looks empty.
        assert await changes.prune(s, utcnow() + timedelta(hours=1)) == 2
    async with sessions() as s:
        assert await changes.oldest_revision(s) == 3
        assert [r.revision for r in await changes.changes_after(s, 0, 10)] == [3]
    assert await _record(sessions) == 4


async def test_missing_counter_row_is_a_clear_error(sessions: Sessions) -> None:
    from sqlalchemy import delete

    from control_plane.store.tables import RevisionCounterRow

    async with sessions.begin() as s:
        await s.execute(delete(RevisionCounterRow))
    with pytest.raises(RuntimeError, match="revision_counter"):
        await _record(sessions)


async def _writer(sessions: Sessions, index: int, commit: bool) -> int | None:
    async with sessions() as s, s.begin():
        # Read first, then write: on SQLite, a transaction that had to upgrade a
        # stale read snapshot would fail with "database is locked" right here.
        await s.scalar(select(func.count()).select_from(ChangeRow))
        revision = await changes.record_change(s, 1, f"org_{index}")
        await asyncio.sleep(0)  # let the other writers pile up on the lock
        if not commit:
            await s.rollback()
            return None
    return revision


async def test_revisions_gap_free_under_concurrent_writers(engine: AsyncEngine, sessions: Sessions) -> None:
    outcomes = await asyncio.gather(*(_writer(sessions, i, commit=i % 3 != 0) for i in range(20)))
    committed = sorted(r for r in outcomes if r is not None)
    assert len(committed) == 13
    assert committed == list(range(1, 14))
    async with sessions() as s:
        assert await changes.current_revision(s) == 13
        rows = await changes.changes_after(s, 0, 100)
    assert [r.revision for r in rows] == committed
    committed_orgs = {f"org_{i}" for i in range(20) if i % 3 != 0}
    assert {r.org_id for r in rows} == committed_orgs


@pytest.mark.postgres
async def test_gap_free_across_engines_on_postgres(pg_server: PostgresServer) -> None:
    # Two engines stand in for two control-plane replicas on one database.
    url = pg_server.create_database(migrated=True)
    engines = [make_engine(url), make_engine(url)]
    try:
        makers = [make_sessionmaker(e) for e in engines]
        outcomes = await asyncio.gather(*(_writer(makers[i % 2], i, commit=i % 4 != 1) for i in range(20)))
        committed = sorted(r for r in outcomes if r is not None)
        assert committed == list(range(1, 16))
    finally:
        for e in engines:
            await e.dispose()


async def _next_notify(conn: psycopg.AsyncConnection[tuple[object, ...]], timeout: float) -> str | None:
    async for note in conn.notifies(timeout=timeout, stop_after=1):
        assert note.channel == changes.NOTIFY_CHANNEL
        return note.payload
    return None


@pytest.mark.postgres
async def test_notify_at_commit_not_on_rollback(pg_server: PostgresServer) -> None:
    url = pg_server.create_database(migrated=True)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    conninfo = url
    listener = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await listener.execute(f"LISTEN {changes.NOTIFY_CHANNEL}")

        async with sessions() as s, s.begin():
            revision = await changes.record_change(s, 1, "org_a")
            # Not delivered while the transaction is open.
            assert await _next_notify(listener, timeout=0.2) is None
        assert await _next_notify(listener, timeout=5) == str(revision)

        async with sessions() as s, s.begin():
            await changes.record_change(s, 1, "org_a")
            await s.rollback()
        # A marker sent after the rollback must be the very next notification.
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as other:
            await other.execute("SELECT pg_notify(%s, 'marker')", (changes.NOTIFY_CHANNEL,))
        assert await _next_notify(listener, timeout=5) == "marker"

        second = await _record(sessions)
        assert second == revision + 1
        assert await _next_notify(listener, timeout=5) == str(second)
    finally:
        await listener.close()
        await engine.dispose()


async def test_sqlite_sends_no_notify(tmp_path: object) -> None:
    # Guard for the dialect switch: pg_notify does not exist on SQLite and must not be called.
    from control_plane.store.db import migrate

    url = f"sqlite:///{tmp_path}/n.db"
    await migrate(url)
    engine = make_engine(url)
    try:
        assert await _record(make_sessionmaker(engine)) == 1
    finally:
        await engine.dispose()
