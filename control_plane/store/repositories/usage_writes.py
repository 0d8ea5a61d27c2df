"""Usage writes on a synchronous Connection: multi-row inserts of records and rollup
deltas (idempotent on their keys) for ingestion, and batched deletes for retention.

PostgreSQL: one ``INSERT ... SELECT ... FROM unnest(array, array, ...)`` per
table, i.e. one fixed statement with one array parameter per column however
many rows, so it is parsed and planned once per connection (a multi-row VALUES
list of thousands of placeholders costs more to build and parse than to run);
each array is sent as one text literal built here (see _pg_literal).
SQLite: multi-row VALUES statements of positional parameters, as driver SQL, at most
SQLITE_ROWS_PER_CALL rows each, the thread yielding its core before each one.
Both: ``ON CONFLICT (request_id) DO NOTHING RETURNING request_id`` returns only
the rows actually inserted; rollups use ``ON CONFLICT ... DO UPDATE`` adding
the deltas to what is there.

The functions take a synchronous Connection: the control plane runs ingestion
and retention in worker threads on its own engine (usage/ingest.py,
usage/retention.py), so compiling and binding thousands of rows never holds the
event loop that serves lease RPCs; an AsyncSession reaches them through ``run_sync``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
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
# Rows per SQLite statement (a multi-row VALUES of positional parameters; 31 columns x 1000 would
# still stay under SQLite's 32766 bound variables). SQLite runs in the control plane's own process:
# a statement of 125 records (half an ingest slice) is a millisecond or two of CPU, and before each
# statement the thread yields its core (os.sched_yield), so a process sharing that core waits for
# one statement, not a whole slice. Issue 16, docs/benchmarks.md (session 15): a gateway's chat p99
# at c=1 with the control plane on the load core, over direct, 1.73-1.96 -> 1.37-1.55 ms; about 8 %
# fewer records per control-plane CPU-second than statements of 1000.
SQLITE_ROWS_PER_CALL = 125
# Rows per SQLite retention delete (about 1.5 ms of CPU), the thread yielding its core before each.
SQLITE_DELETE_ROWS = 1000

RECORDS: Table = UsageRecordRow.__table__  # type: ignore[assignment]
ROLLUPS: Table = UsageRollupRow.__table__  # type: ignore[assignment]


def _pg_array_type(column: Column[Any]) -> str:
    # Order matters: BigInteger and SmallInteger are Integer subclasses.
    for sa_type, pg in ((BigInteger, "bigint"), (SmallInteger, "smallint"), (Integer, "integer"),
                        (Boolean, "boolean"), (String, "text"), (DateTime, "timestamptz")):  # fmt: skip
        if isinstance(column.type, sa_type) or isinstance(getattr(column.type, "impl", None), sa_type):
            return pg
    raise TypeError(f"no array type for {column.name}: {column.type!r}")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


# Columns -> one PostgreSQL array literal each ('{1,2,NULL}'), built with str.join (C) instead
# of psycopg's per-element Python dumpers (three quarters of the write's CPU before). Times go
# as bigint microseconds since the epoch (exact) and become timestamptz on the server.
def _pg_text(value: str | None) -> str:
    if value is None:
        return "NULL"
    # Inside double quotes only backslash and double quote are special; NUL cannot be stored
    # (records.prepare refuses it) and the server refuses it here too.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pg_text_array(values: list[str | None]) -> str:
    present = [v for v in values if v is not None] if None in values else values
    if not present:
        return "{" + ",".join(["NULL"] * len(values)) + "}"
    raw = "".join(present)  # type: ignore[arg-type]
    if "\\" in raw or '"' in raw:
        return "{" + ",".join(map(_pg_text, values)) + "}"
    # Nothing to escape (the usual batch): quote each value without a call per value.
    if len(present) == len(values):
        return '{"' + '","'.join(present) + '"}'  # type: ignore[arg-type]
    return "{" + ",".join("NULL" if v is None else f'"{v}"' for v in values) + "}"


def _pg_literal(kind: str, values: list[Any]) -> str:
    if kind == "text":
        return _pg_text_array(values)
    if kind == "boolean":
        return "{" + ",".join("NULL" if v is None else ("t" if v else "f") for v in values) + "}"
    if None in values:
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"
    return "{" + ",".join(map(str, map(int, values))) + "}"


def _pg_unnest_insert(table: Table, conflict: str) -> TextClause:
    names = [c.name for c in table.columns]
    kinds = [_pg_array_type(c) for c in table.columns]
    arrays = ", ".join(f"CAST(CAST(:{n} AS text) AS {'bigint' if k == 'timestamptz' else k}[])"
                       for n, k in zip(names, kinds, strict=True))  # fmt: skip
    selected = ", ".join(
        f"timestamptz 'epoch' + u.{n} * interval '1 microsecond'" if k == "timestamptz" else f"u.{n}"
        for n, k in zip(names, kinds, strict=True)
    )
    return text(
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {selected} "
        f"FROM unnest({arrays}) AS u({', '.join(names)}) {conflict}"
    )


@cache
def _pg_records_statement() -> TextClause:
    return _pg_unnest_insert(RECORDS, "ON CONFLICT (request_id) DO NOTHING RETURNING request_id")


@cache
def _pg_rollups_statement() -> TextClause:
    updates = ", ".join(f"{n} = {ROLLUPS.name}.{n} + excluded.{n}" for n in ROLLUP_SUMS)
    return _pg_unnest_insert(ROLLUPS, f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}")


# SQLite: hand-built multi-row VALUES of positional parameters, run as driver SQL: SQLAlchemy's
# compiled executemany spent more CPU binding each value (type processors, per-row dicts) than
# SQLite spent storing it. Times are stored in SQLAlchemy's SQLite format (the ORM reads them).
def _sqlite_time(us: int, prefixes: dict[int, str]) -> str:
    second, fraction = divmod(us, 1_000_000)
    prefix = prefixes.get(second)
    if prefix is None:
        d = _EPOCH + timedelta(seconds=second)
        prefix = prefixes[second] = (f"{d.year:04d}-{d.month:02d}-{d.day:02d} "
                                     f"{d.hour:02d}:{d.minute:02d}:{d.second:02d}")  # fmt: skip
    return f"{prefix}.{fraction:06d}"


def _sqlite_times(column: list[int | None], prefixes: dict[int, str]) -> list[str | None]:
    # One formatting per distinct value: a batch's receive times are all the same.
    table = {us: None if us is None else _sqlite_time(us, prefixes) for us in set(column)}
    return list(map(table.__getitem__, column))


@lru_cache(maxsize=64)  # batches sealed by age have any size: keep the usual ones, not every one
def _sqlite_statement(table_name: str, columns: tuple[str, ...], rows: int, tail: str) -> str:
    row = "(" + ",".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES {','.join([row] * rows)} {tail}"


@cache
def _kinds(table: Table) -> tuple[tuple[str, str], ...]:
    return tuple((c.name, _pg_array_type(c)) for c in table.columns)


def _sqlite_run(
    conn: Connection, table: Table, values: dict[str, list[Any]], count: int, tail: str
) -> list[Any]:
    kinds = _kinds(table)
    prefixes: dict[int, str] = {}
    columns = [_sqlite_times(values[n], prefixes) if k == "timestamptz" else values[n] for n, k in kinds]
    names = tuple(n for n, _ in kinds)
    out: list[Any] = []
    for start in range(0, count, SQLITE_ROWS_PER_CALL):
        _yield_core()
        stop = min(count, start + SQLITE_ROWS_PER_CALL)
        flat = [v for row in zip(*(c[start:stop] for c in columns), strict=True) for v in row]
        result = conn.exec_driver_sql(_sqlite_statement(table.name, names, stop - start, tail), tuple(flat))
        if result.returns_rows:
            out.extend(result.scalars().all())
    return out


def _yield_core() -> None:
    """Let any other thread or process waiting for this core run first (a no-op where the OS has no
    sched_yield); releases the interpreter lock meanwhile, so the event loop may go first too."""
    sched_yield = getattr(os, "sched_yield", None)
    if sched_yield is not None:
        sched_yield()


def _is_postgres(conn: Connection) -> bool:
    name = conn.dialect.name
    if name not in ("postgresql", "sqlite"):
        raise RuntimeError(f"unsupported database dialect {name!r}")
    return name == "postgresql"


def _as_columns(table: Table, rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for name, kind in _kinds(table):
        column = [row[name] for row in rows]
        if kind == "timestamptz":
            column = [None if v is None else _micros(v) for v in column]
        out[name] = column
    return out


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError("naive datetime")
    return (value - _EPOCH) // _MICROSECOND


def insert_record_columns(conn: Connection, values: dict[str, list[Any]], count: int) -> set[str]:
    """Insert ``count`` records given column by column (times: microseconds since the epoch)
    unless their request id exists; the ids inserted."""
    if not count:
        return set()
    if _is_postgres(conn):
        params = {
            n: _pg_literal("bigint" if k == "timestamptz" else k, values[n]) for n, k in _kinds(RECORDS)
        }
        return set(conn.execute(_pg_records_statement(), params).scalars().all())
    return set(
        _sqlite_run(conn, RECORDS, values, count, "ON CONFLICT (request_id) DO NOTHING RETURNING request_id")
    )


def insert_records(conn: Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert ``rows`` (usage_records column values) unless their request id exists; the ids inserted."""
    return insert_record_columns(conn, _as_columns(RECORDS, rows), len(rows))


@cache
def _sqlite_rollups_tail() -> str:
    updates = ", ".join(f"{n} = {ROLLUPS.name}.{n} + excluded.{n}" for n in ROLLUP_SUMS)
    return f"ON CONFLICT ({', '.join(ROLLUP_KEY)}) DO UPDATE SET {updates}"


def add_rollup_columns(conn: Connection, values: dict[str, list[Any]], count: int) -> None:
    """Add ``count`` deltas given column by column (keys unique) to the hourly rollups."""
    if not count:
        return
    if _is_postgres(conn):
        conn.execute(_pg_rollups_statement(), {n: _pg_literal(k, values[n]) for n, k in _kinds(ROLLUPS)})
        return
    _sqlite_run(conn, ROLLUPS, values, count, _sqlite_rollups_tail())


def add_rollups(conn: Connection, deltas: Sequence[dict[str, Any]]) -> None:
    """Add ``deltas`` (one per rollup key, keys unique) to the hourly rollups."""
    add_rollup_columns(conn, _as_columns(ROLLUPS, deltas), len(deltas))


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

    def step(rows: int) -> int:
        oldest = (
            select(RECORDS.c.request_id).where(RECORDS.c.time < before).order_by(RECORDS.c.time).limit(rows)
        )
        return int(
            conn.execute(delete(RECORDS).where(RECORDS.c.request_id.in_(oldest.scalar_subquery()))).rowcount
        )

    return _deleted_in_steps(conn, limit, step)


def delete_rollups(conn: Connection, before_hour: int, limit: int, lock_key: int) -> int | None:
    """Delete up to ``limit`` rollups of hours before ``before_hour``, oldest first.

    None when another transaction holds ``lock_key`` (another replica is pruning).
    """
    if not try_advisory_xact_lock(conn, lock_key):
        return None
    key = [ROLLUPS.c[name] for name in ROLLUP_KEY]

    def step(rows: int) -> int:
        oldest = select(*key).where(ROLLUPS.c.hour < before_hour).order_by(ROLLUPS.c.hour).limit(rows)
        return int(conn.execute(delete(ROLLUPS).where(tuple_(*key).in_(oldest))).rowcount)

    return _deleted_in_steps(conn, limit, step)


def _deleted_in_steps(conn: Connection, limit: int, step: Callable[[int], int]) -> int:
    """Up to ``limit`` oldest rows deleted by ``step(rows)``: one statement on PostgreSQL; on SQLite,
    which deletes in this process, statements of at most SQLITE_DELETE_ROWS, the thread yielding its
    core before each (as inserts do: a 5,000-row delete is about 7 ms of CPU)."""
    if _is_postgres(conn):
        return step(limit)
    deleted = 0
    while deleted < limit:
        _yield_core()
        rows = min(SQLITE_DELETE_ROWS, limit - deleted)
        done = step(rows)
        deleted += done
        if done < rows:
            break
    return deleted
