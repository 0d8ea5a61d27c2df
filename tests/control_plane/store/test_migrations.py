"""Migrations upgrade an empty database on both backends to exactly the schema in tables.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Integer, MetaData, inspect, select, text

from control_plane.store.db import _alembic_config, make_engine, migrate, normalize_url, sync_url
from control_plane.store.tables import Base, RevisionCounterRow
from tests.support.postgres import PostgresServer

EXPECTED_TABLES = {
    "alembic_version",
    "orgs",
    "credentials",
    "models",
    "model_deployments",
    "virtual_keys",
    "admin_tokens",
    "revision_counter",
    "changes",
    "usage_records",
    "usage_rollups",
    "limit_counters",
    "limit_leases",
    "provider_objects",
}


def _diff(conn: Connection, metadata: MetaData) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(ctx, metadata))


async def test_upgrade_empty_database_matches_models(db_url: str) -> None:
    await migrate(db_url)
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert tables == EXPECTED_TABLES
            assert await conn.run_sync(_diff, Base.metadata) == []
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            head = ScriptDirectory.from_config(_alembic_config(db_url)).get_current_head()
            assert version == head
            rows = (await conn.execute(select(RevisionCounterRow.id, RevisionCounterRow.value))).all()
            assert [tuple(r) for r in rows] == [(1, 0)]
    finally:
        await engine.dispose()


async def test_comparison_is_not_vacuous(db_url: str) -> None:
    await migrate(db_url)
    extra = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(extra)
    extra.tables["orgs"].append_column(Column("surprise", Integer))
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff, extra)
    finally:
        await engine.dispose()
    assert [d[0] for d in diff] == ["add_column"] and diff[0][3].name == "surprise"


async def test_migrate_twice_is_a_no_op_and_downgrade_round_trips(db_url: str) -> None:
    await migrate(db_url)
    await migrate(db_url)
    cfg = _alembic_config(db_url)
    command.downgrade(cfg, "base")
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        assert tables <= {"alembic_version"}
        await migrate(db_url)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff, Base.metadata) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./odock.db", "sqlite+aiosqlite:///./odock.db"),
        ("sqlite:////var/lib/odock.db", "sqlite+aiosqlite:////var/lib/odock.db"),
        ("postgresql://u@h:5432/db", "postgresql+psycopg://u@h:5432/db"),
        ("postgres://u:p%40ss@h/db?sslmode=require", "postgresql+psycopg://u:p%40ss@h/db?sslmode=require"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_sync_url_for_alembic() -> None:
    assert sync_url("sqlite:///x.db") == "sqlite+pysqlite:///x.db"
    assert sync_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"


@pytest.mark.parametrize("url", ["", "mysql://u@h/db", "odock.db"])
def test_normalize_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        normalize_url(url)


async def test_sqlite_engine_pragmas(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() >= 1000
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_concurrent_migrations_on_postgres(pg_server: PostgresServer) -> None:
    # Replicas starting at once must not race each other's CREATE TABLE.
    url = pg_server.create_database()
    await asyncio.gather(*(migrate(url) for _ in range(3)))
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff, Base.metadata) == []
            rows = (await conn.execute(select(RevisionCounterRow.id, RevisionCounterRow.value))).all()
            assert [tuple(r) for r in rows] == [(1, 0)]
    finally:
        await engine.dispose()
