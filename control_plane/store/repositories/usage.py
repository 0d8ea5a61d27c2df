"""Queries on stored usage: hourly rollup totals, raw records by filter, one record.

(Writes and retention deletes run on worker threads: ``usage_writes.py``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from control_plane.store.tables import UsageRecordRow, UsageRollupRow

ROLLUP_FILTERS = ("org_id", "key_id", "model_name")


def _time_bucket(bucket_hours: int | None) -> list[ColumnElement[Any]]:
    R = UsageRollupRow
    if bucket_hours is None:
        return []
    if bucket_hours == 1:
        return [R.__table__.c.hour]
    # Inlined constant: the same expression must appear in SELECT, GROUP BY and ORDER BY.
    width = literal_column(str(bucket_hours), BigInteger)
    return [R.hour - R.hour % width]


async def rollup_totals(
    session: AsyncSession,
    *,
    start_hour: int,
    end_hour: int,
    filters: dict[str, str | None],
    bucket_hours: int | None,
    group_by: Sequence[str],
    outcomes: Sequence[int],
    counters: Sequence[str],
    after: Sequence[Any] | None,
    limit: int,
) -> Sequence[Row[Any]]:
    """Sums over the rollups of hours in [start_hour, end_hour) matching ``filters`` (column -> value or None).

    Grouped by the hour bucket (``bucket_hours`` wide, aligned on the epoch; None: no time
    grouping) then by the ``group_by`` columns, in that order, keyset-paged after the group
    values ``after`` and limited to ``limit`` rows (paging applies only when there are groups).
    Each row: the group values, the requests of each of ``outcomes``, all requests, then the
    sum of each of ``counters`` (columns of the rollups).
    """
    R = UsageRollupRow
    columns = R.__table__.c
    groups = _time_bucket(bucket_hours) + [columns[name] for name in group_by]
    sums = [func.sum(case((R.outcome == value, R.requests), else_=0)) for value in outcomes]
    sums += [func.sum(R.requests)] + [func.sum(columns[name]) for name in counters]
    stmt = select(*groups, *sums).where(R.hour >= start_hour, R.hour < end_hour)
    for column in ROLLUP_FILTERS:
        value = filters.get(column)
        if value is not None:
            stmt = stmt.where(columns[column] == value)
    if groups:
        if after is not None:
            stmt = stmt.where(tuple_(*groups) > tuple_(*(literal(v) for v in after)))
        stmt = stmt.group_by(*groups).order_by(*groups).limit(limit)
    return (await session.execute(stmt)).all()


async def records_page(
    session: AsyncSession,
    *,
    filters: dict[str, str | None],
    start: datetime | None,
    end: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> Sequence[UsageRecordRow]:
    """Records matching ``filters`` (column -> value or None) with time in [start, end), newest first.

    Ordered by (time, request_id) descending, keyset-paged after ``after``, at most ``limit``.
    """
    R = UsageRecordRow
    stmt = select(R)
    for column in ("org_id", "key_id", "model_name", "client_request_id", "request_id"):
        value = filters.get(column)
        if value is not None:
            stmt = stmt.where(getattr(R, column) == value)
    if start is not None:
        stmt = stmt.where(R.time >= start)
    if end is not None:
        stmt = stmt.where(R.time < end)
    if after is not None:
        when, request_id = after
        stmt = stmt.where(or_(R.time < when, and_(R.time == when, R.request_id < request_id)))
    stmt = stmt.order_by(R.time.desc(), R.request_id.desc()).limit(limit)
    return (await session.scalars(stmt)).all()


async def get_record(session: AsyncSession, request_id: str) -> UsageRecordRow | None:
    """The record of this request, if stored."""
    return await session.get(UsageRecordRow, request_id)
