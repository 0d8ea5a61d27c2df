"""The ledger (control_plane/store/repositories/ledger.py) on real SQLite and PostgreSQL databases, and its windows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.limits.windows import window_for
from control_plane.store import db
from control_plane.store.repositories import ledger
from control_plane.store.tables import UsageRollupRow
from odock.limitmetrics import BUDGET, MONTHLY_TOKENS, REQUESTS_PER_MINUTE
from tests.support.postgres import PostgresServer


def test_windows() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    month = window_for(MONTHLY_TOKENS, now, 60)
    assert month.start == datetime(2026, 12, 1, tzinfo=UTC) and month.end == datetime(2027, 1, 1, tzinfo=UTC)
    minute = window_for(REQUESTS_PER_MINUTE, now, 10)
    assert minute.seconds == 10 and minute.start is not None and minute.start <= now < minute.end  # type: ignore[operator]
    assert window_for(BUDGET, now, 60).end is None


@pytest.mark.asyncio
async def test_ledger_seeds_from_rollups_grants_within_the_limit_and_settles(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    await db.migrate(url)
    engine = db.make_engine(url)
    sm = db.make_sessionmaker(engine)
    try:
        now = datetime.now(UTC)
        win = window_for(MONTHLY_TOKENS, now, 60)
        async with sm() as s, s.begin():
            s.add(UsageRollupRow(org_id="org_x", hour=int(now.timestamp() // 3600), key_id="k", model_name="m",
                                 outcome=1, requests=1, input_tokens=300, output_tokens=100, cached_input_tokens=0,
                                 reasoning_tokens=0, cost_picos=0))  # fmt: skip
        async with sm() as s, s.begin():
            counter = await ledger.ensure_counter(s, "org_x", "org_x", MONTHLY_TOKENS, win)
            assert counter.settled == 400  # seeded from the rollups
            amount, after = await ledger.grant(s, "org_x", MONTHLY_TOKENS, win.index, 1000, 5000, 10, 0.25)
            assert amount == 150 and after.outstanding == 150  # a quarter of the 600 left
            await ledger.add_lease(s, "lse_1", "n", "org_x", MONTHLY_TOKENS, win.index, amount, now)
            denied, _ = await ledger.grant(s, "org_x", MONTHLY_TOKENS, win.index, 1000, 5000, 451, 0.25)
            assert denied == 0  # 450 left < need
        async with sm() as s, s.begin():
            assert await ledger.settle_lease(s, "lse_1", 40)
            assert not await ledger.settle_lease(s, "lse_1", 40)  # once only
            counter2 = await ledger.read(s, "org_x", MONTHLY_TOKENS, win.index)
            assert counter2 is not None and (counter2.settled, counter2.outstanding) == (440, 0)
            await ledger.add_lease(
                s, "lse_2", "n", "org_x", MONTHLY_TOKENS, win.index, 0, now - timedelta(seconds=1)
            )
            assert await ledger.reclaim_expired(s, now) == 1
    finally:
        await engine.dispose()


@pytest.mark.asyncio
@pytest.mark.postgres
async def test_ledger_grants_under_contention_never_refuse_while_allowance_is_left(
    pg_server: PostgresServer,
) -> None:
    """64 replicas' worth of concurrent grants on one window near exhaustion (PostgreSQL).

    Each grant races the others between its read and its conditional update; a grant may only
    come back empty when the window truly has less than it needs, and together they hand out
    exactly the limit.
    """
    url = pg_server.create_database()
    await db.migrate(url)
    engine = db.make_engine(url, pool_size=64, max_overflow=0)
    sm = db.make_sessionmaker(engine)
    try:
        win = window_for(MONTHLY_TOKENS, datetime.now(UTC), 60)
        async with sm() as s, s.begin():
            await ledger.ensure_counter(s, "org_c", "org_c", MONTHLY_TOKENS, win)

        async def one() -> tuple[int, ledger.Counter]:
            async with sm() as s, s.begin():
                return await ledger.grant(s, "org_c", MONTHLY_TOKENS, win.index, 1000, 10**6, 1, 0.25)

        results = await asyncio.gather(*(one() for _ in range(64)))
        granted = sum(amount for amount, _ in results)
        assert granted == 1000
        for amount, counter in results:
            if amount == 0:
                assert counter.remaining(1000) < 1, counter
    finally:
        await engine.dispose()
