"""Usage writes on a synchronous Connection: multi-row inserts of records and rollup
deltas (idempotent on their keys) for ingestion, and batched deletes for retention.

PostgreSQL: one ``INSERT ... SELECT * FROM unnest(array, array, ...)`` per
table, i.e. one fixed statement with one array parameter per column however
many rows, so it is parsed and planned once per connection (a multi-row VALUES
list of thousands of placeholders costs more to build and parse than to run).
SQLite: SQLAlchemy's executemany pages rows into multi-row VALUES statements.
Both: ``ON CONFLICT (request_id) DO NOTHING RETURNING request_id`` returns only
the rows actually inserted; rollups use ``ON CONFLICT ... DO UPDATE`` adding
the deltas to what is there.

The functions take a synchronous Connection: the control plane runs ingestion
and retention in worker threads on its own engine (usage/ingest.py,
usage/retention.py), so compiling and binding thousands of rows never holds the
event loop that serves lease RPCs; an AsyncSession reaches them through ``run_sync``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    SmallInteger,
    String,
    Table,
    TextClause,
    delete,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection

from control_plane.store.tables import UsageRecordRow, UsageRollupRow

ROLLUP_KEY = ("org_id", "hour", "key_id", "model_name", "outcome")
ROLLUP_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_picos",
    "audio_milliseconds",
    "input_characters",
)
# Rows per SQLite executemany; SQLAlchemy pages them into multi-row VALUES of at
# most 1000 rows (31 columns x 1000 stays under SQLite's 32766 bound variables).
SQLITE_ROWS_PER_CALL = 1000

RECORDS: Table = UsageRecordRow.__table__  # type: ignore[assignment]
ROLLUPS: Table = UsageRollupRow.__table__  # type: ignore[assignment]


def _pg_array_type(column: Column[Any]) -> str:
    # Order matters: BigInteger and SmallInteger are Integer subclasses.
    for sa_type, pg in ((BigInteger, "bigint"), (SmallInteger, "smallint"), (Integer, "integer"),
                        (Boolean, "boolean"), (String, "text"), (DateTime, "timestamptz")):  # fmt: skip
        if isinstance(column.type, sa_type) or isinstance(getattr(column.type, "impl", None), sa_type):
            return f"{pg}[]"
    raise TypeError(f"no array type for {column.name}: {column.type!r}")


def _pg_unnest_insert(table: Table, conflict: str) -> TextClause:
    names = [c.name for c in table.columns]
    arrays = ", ".join(f"CAST(:{c.name} AS {_pg_array_type(c)})" for c in table.columns)
    return text(f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays}) {conflict}")


@cache
def _pg_records_statement() -> TextClause:
    return _pg_unnest_insert(RECORDS, "ON CONFLICT (request_id) DO NOTHING RETURNING request_id")


@cache
def _pg_rollups_statement() -> TextClause:
    updates = ", ".join(f"{n} = {ROLLUPS.name}.{n} + excluded.{n}" for n in ROLLUP_SUMS)
    return _pg_unnest_insert(ROLLUPS, f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}")


def _columns(table: Table, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    return {c.name: [row[c.name] for row in rows] for c in table.columns}


def _is_postgres(conn: Connection) -> bool:
    name = conn.dialect.name
    if name not in ("postgresql", "sqlite"):
        raise RuntimeError(f"unsupported database dialect {name!r}")
    return name == "postgresql"


def insert_records(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert ``rows`` (usage_records column values) unless their request id exists; the ids inserted."""
    if _is_postgres(conn):
        result = conn.execute(_pg_records_statement(), _columns(RECORDS, rows))
        return set(result.scalars().all())
    stmt = (
        sqlite.insert(RECORDS)
        .on_conflict_do_nothing(index_elements=["request_id"])
        .returning(RECORDS.c.request_id)
    )
    inserted: set[str] = set()
    for start in range(0, len(rows), SQLITE_ROWS_PER_CALL):
        inserted.update(
            conn.execute(stmt, list(rows[start : start + SQLITE_ROWS_PER_CALL])).scalars().all()
        )
    return inserted


def add_rollups(conn: Connection, deltas: Sequence[dict[str, Any]]) -> None:
    """Add ``deltas`` (one per rollup key, keys unique) to the hourly rollups."""
    if not deltas:
        return
    if _is_postgres(conn):
        conn.execute(_pg_rollups_statement(), _columns(ROLLUPS, deltas))
        return
    stmt = sqlite.insert(ROLLUPS)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(ROLLUP_KEY), set_={n: ROLLUPS.c[n] + stmt.excluded[n] for n in ROLLUP_SUMS}
    )
    for start in range(0, len(deltas), SQLITE_ROWS_PER_CALL):
        conn.execute(stmt, list(deltas[start : start + SQLITE_ROWS_PER_CALL]))


# -- retention --------------------------------------------------------------


def try_advisory_xact_lock(conn: Connection, key: int) -> bool:
    """PostgreSQL: take the transaction-scoped advisory lock ``key`` if it is free.

    SQLite: always True (a single control plane writes it).
    """
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}))


def delete_records(conn: Connection, before: datetime, limit: int, lock_key: int) -> int | None:
    """Delete up to ``limit`` records older than ``before``, oldest first.

    None when another transaction holds ``lock_key`` (another replica is pruning).
    """
    if not try_advisory_xact_lock(conn, lock_key):
        return None
    oldest = select(RECORDS.c.request_id).where(RECORDS.c.time < before).order_by(RECORDS.c.time).limit(limit)
    return int(conn.execute(delete(RECORDS).where(RECORDS.c.request_id.in_(oldest.scalar_subquery()))).rowcount)


def delete_rollups(conn: Connection, before_hour: int, limit: int, lock_key: int) -> int | None:
    """Delete up to ``limit`` rollups of hours before ``before_hour``, oldest first.

    None when another transaction holds ``lock_key`` (another replica is pruning).
    """
    if not try_advisory_xact_lock(conn, lock_key):
        return None
    key = [ROLLUPS.c[name] for name in ROLLUP_KEY]
    oldest = select(*key).where(ROLLUPS.c.hour < before_hour).order_by(ROLLUPS.c.hour).limit(limit)
    return int(conn.execute(delete(ROLLUPS).where(tuple_(*key).in_(oldest))).rowcount)
