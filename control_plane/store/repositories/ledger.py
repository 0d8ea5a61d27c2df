"""Atomic accounting of limit windows in the database (both backends).

Every change is one conditional or additive UPDATE on a counter row, so
concurrent control-plane replicas never grant more than the limit between
them, and a restart loses nothing. A window's counter is created the first
time it is touched, seeded from the usage rollups (so usage recorded before
the limit existed, or before the counters were kept, still counts). The
limits (``control_plane/limits/``) decide what to ask; this module only counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from control_plane.store.tables import LimitCounterRow, LimitLeaseRow, UsageRollupRow, utcnow
from odock.limitmetrics import BUDGET, MONTHLY_SPEND, MONTHLY_TOKENS

PICOS_PER_MICRO = 1_000_000
# Optimistic retries of a grant that lost a race with another replica.
GRANT_ATTEMPTS = 8

C = LimitCounterRow


class Span(Protocol):
    """A counting window as the ledger needs it (``control_plane.limits.windows.Window``)."""

    @property
    def index(self) -> int: ...

    @property
    def start(self) -> datetime | None: ...

    @property
    def end(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class Counter:
    """A window's counter as read."""

    settled: int
    outstanding: int
    exhausted: bool

    def remaining(self, limit: int) -> int:
        """What is not yet spent or promised to a lease (negative after an overdraft)."""
        return limit - self.settled - self.outstanding


def _hour(when: datetime) -> int:
    return int(when.timestamp() // 3600)


async def _seed(session: AsyncSession, org_id: str, scope_id: str, metric: int, window: Span) -> int:
    """What the usage rollups already hold for this window."""
    R = UsageRollupRow
    where = [R.org_id == org_id]
    if window.start is not None and window.end is not None:
        where += [R.hour >= _hour(window.start), R.hour < _hour(window.end)]
    if metric == MONTHLY_TOKENS:
        total = await session.scalar(select(func.sum(R.input_tokens + R.output_tokens)).where(*where))
        return int(total or 0)
    if metric in (MONTHLY_SPEND, BUDGET):
        if metric == BUDGET:
            where.append(R.key_id == scope_id)
        picos = await session.scalar(select(func.sum(R.cost_picos)).where(*where))
        return math.ceil(int(picos or 0) / PICOS_PER_MICRO)
    return 0  # per-minute windows start empty


async def ensure_counter(
    session: AsyncSession, org_id: str, scope_id: str, metric: int, window: Span
) -> Counter:
    """The window's counter, created (seeded from the rollups) if this is its first use."""
    row = await read(session, scope_id, metric, window.index)
    if row is not None:
        return row
    seed = await _seed(session, org_id, scope_id, metric, window)
    values = {
        "scope_id": scope_id, "metric": metric, "window": window.index, "org_id": org_id, "settled": seed,
        "outstanding": 0, "exhausted": False, "window_end": window.end, "update_time": utcnow(),
    }  # fmt: skip
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Another replica may create it at the same moment: the first insert wins.
    await session.execute(insert(C).values(**values).on_conflict_do_nothing())
    row = await read(session, scope_id, metric, window.index)
    assert row is not None
    return row


async def read(
    session: AsyncSession, scope_id: str, metric: int, window: int, *, lock: bool = False
) -> Counter | None:
    """The counter of one window, if it exists (``lock``: row-locked until the transaction ends)."""
    query = select(C.settled, C.outstanding, C.exhausted).where(
        C.scope_id == scope_id, C.metric == metric, C.window == window
    )
    if lock:
        query = query.with_for_update()
    found = (await session.execute(query)).first()
    return None if found is None else Counter(int(found[0]), int(found[1]), bool(found[2]))


def _pk(scope_id: str, metric: int, window: int) -> list[ColumnElement[bool]]:
    return [C.scope_id == scope_id, C.metric == metric, C.window == window]


async def grant(
    session: AsyncSession,
    scope_id: str,
    metric: int,
    window: int,
    limit: int,
    want: int,
    need: int,
    fraction: float,
) -> tuple[int, Counter]:
    """Grant between ``need`` and ``want`` (0 when less than ``need`` is left); returns (amount, counter after).

    No single grant takes more than ``fraction`` of what is left (unless that is
    less than ``need``), so an idle node never strands much of the allowance.
    """
    for attempt in range(GRANT_ATTEMPTS):
        # The last attempt locks the row (PostgreSQL), so a busy window cannot starve a grant into
        # a spurious 0 while allowance is left. SQLite has a single writer: nothing to lock there.
        counter = await read(session, scope_id, metric, window, lock=attempt == GRANT_ATTEMPTS - 1)
        assert counter is not None
        remaining = counter.remaining(limit)
        if remaining < max(need, 1):
            return 0, counter
        cap = max(need, math.ceil(remaining * fraction))
        amount = min(max(want, need), cap, remaining)
        stmt = (
            update(C)
            .where(*_pk(scope_id, metric, window), C.settled + C.outstanding + amount <= limit)
            .values(outstanding=C.outstanding + amount, exhausted=False, update_time=utcnow())
            .returning(C.settled, C.outstanding, C.exhausted)
        )
        after = (await session.execute(stmt)).first()
        if after is not None:
            return amount, Counter(int(after[0]), int(after[1]), bool(after[2]))
    counter = await read(session, scope_id, metric, window)
    assert counter is not None
    return 0, counter


async def mark_exhausted(session: AsyncSession, scope_id: str, metric: int, window: int) -> bool:
    """Flag the window exhausted; True only for the call that flipped it (announce once)."""
    result = await session.execute(
        update(C).where(*_pk(scope_id, metric, window), C.exhausted.is_(False)).values(exhausted=True)
    )
    return bool(getattr(result, "rowcount", 0))


async def add_lease(
    session: AsyncSession,
    lease_id: str,
    node_id: str,
    scope_id: str,
    metric: int,
    window: int,
    amount: int,
    expire_time: datetime,
) -> None:
    """Record a live lease of a returnable window."""
    session.add(LimitLeaseRow(id=lease_id, node_id=node_id[:128], scope_id=scope_id, metric=metric,
                              window=window, amount=amount, expire_time=expire_time))  # fmt: skip
    await session.flush()


async def settle_lease(session: AsyncSession, lease_id: str, used: int | None) -> bool:
    """Close a lease: its amount leaves ``outstanding`` and ``used`` (None: all of it) joins ``settled``.

    The DELETE ... RETURNING makes this happen once even if two replicas race.
    """
    L = LimitLeaseRow
    gone = (
        await session.execute(
            delete(L).where(L.id == lease_id).returning(L.scope_id, L.metric, L.window, L.amount)
        )
    ).first()
    if gone is None:
        return False
    scope_id, metric, window, amount = str(gone[0]), int(gone[1]), int(gone[2]), int(gone[3])
    spent = amount if used is None else max(0, used)
    await session.execute(
        update(C)
        .where(*_pk(scope_id, metric, window))
        .values(outstanding=C.outstanding - amount, settled=C.settled + spent, update_time=utcnow())
    )
    return True


async def adjust(session: AsyncSession, scope_id: str, metric: int, window: int, delta: int) -> None:
    """Correct a window's spend after the lease it was charged to went back (actual vs reserved)."""
    await session.execute(
        update(C)
        .where(*_pk(scope_id, metric, window))
        .values(settled=C.settled + delta, update_time=utcnow())
    )


async def reclaim_expired(session: AsyncSession, now: datetime, limit: int = 200) -> int:
    """Leases past their expiry, never returned: counted as spent in full."""
    L = LimitLeaseRow
    ids = (await session.scalars(select(L.id).where(L.expire_time < now).limit(limit))).all()
    count = 0
    for lease_id in ids:
        count += await settle_lease(session, lease_id, None)
    return count


async def prune(session: AsyncSession, before: datetime) -> int:
    """Drop counters of windows that ended before ``before``."""
    result = await session.execute(delete(C).where(C.window_end.is_not(None), C.window_end < before))
    return int(getattr(result, "rowcount", 0) or 0)
