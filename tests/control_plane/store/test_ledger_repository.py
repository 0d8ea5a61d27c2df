"""The limit ledger (store/repositories/ledger.py) on both backends: counters seeded from the
rollups of their window and scope, grants within the limit, exhaustion announced once, leases
settled once, adjustments and housekeeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.limits.windows import window_for
from control_plane.store.repositories import ledger
from control_plane.store.tables import UsageRollupRow
from odock.limitmetrics import BUDGET, MONTHLY_SPEND, MONTHLY_TOKENS, REQUESTS_PER_MINUTE

Sessions = async_sessionmaker[AsyncSession]


def _rollup(org_id: str, hour: int, key_id: str, tokens: tuple[int, int], cost_picos: int) -> UsageRollupRow:
    return UsageRollupRow(
        org_id=org_id, hour=hour, key_id=key_id, model_name="m", outcome=1, requests=1, input_tokens=tokens[0],
        output_tokens=tokens[1], cached_input_tokens=0, reasoning_tokens=0, cost_picos=cost_picos,
    )  # fmt: skip


async def _counter(sessions: Sessions, scope_id: str, metric: int, window: int) -> ledger.Counter:
    async with sessions() as s:
        counter = await ledger.read(s, scope_id, metric, window)
    assert counter is not None
    return counter


async def test_counters_are_seeded_once_from_the_rollups_of_their_window_and_scope(sessions: Sessions) -> None:
    now = datetime.now(UTC)
    month = window_for(MONTHLY_TOKENS, now, 60)
    assert month.start is not None
    hour, last_month = int(now.timestamp() // 3600), int(month.start.timestamp() // 3600) - 1
    async with sessions.begin() as s:
        s.add_all([
            _rollup("org_a", hour, "key_1", (300, 100), 2_500_001),
            _rollup("org_a", hour, "key_2", (50, 50), 1_000_000),
            _rollup("org_a", last_month, "key_1", (1000, 1000), 10**9),
            _rollup("org_b", hour, "key_3", (7, 7), 7),
        ])  # fmt: skip
    budget = window_for(BUDGET, now, 60)
    minute = window_for(REQUESTS_PER_MINUTE, now, 60)
    async with sessions.begin() as s:
        tokens = await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_TOKENS, month)
        spend = await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_SPEND, month)
        key_budget = await ledger.ensure_counter(s, "org_a", "key_1", BUDGET, budget)
        rpm = await ledger.ensure_counter(s, "org_a", "org_a", REQUESTS_PER_MINUTE, minute)
    assert tokens == ledger.Counter(settled=500, outstanding=0, exhausted=False)  # this month, this org
    assert spend.settled == 4  # 3.500001 micro-USD, rounded up
    assert key_budget.settled == 1003  # the key's whole life: 1002.500001 micro-USD, rounded up
    assert rpm.settled == 0  # per-minute windows start empty
    async with sessions.begin() as s:
        s.add(_rollup("org_a", hour, "key_4", (1, 1), 0))
    async with sessions.begin() as s:  # an existing counter is not seeded again
        again = await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_TOKENS, month)
    assert again.settled == 500
    async with sessions() as s:
        assert await ledger.read(s, "org_a", MONTHLY_TOKENS, month.index + 1) is None


async def test_grants_stay_within_the_limit_and_take_at_most_a_fraction_of_what_is_left(
    sessions: Sessions,
) -> None:
    win = window_for(REQUESTS_PER_MINUTE, datetime.now(UTC), 60)
    async with sessions.begin() as s:
        await ledger.ensure_counter(s, "org_a", "org_a", REQUESTS_PER_MINUTE, win)
        first = await ledger.grant(s, "org_a", REQUESTS_PER_MINUTE, win.index, 100, 80, 1, 0.25)
        assert first == (25, ledger.Counter(0, 25, False))  # a quarter of 100
        small = await ledger.grant(s, "org_a", REQUESTS_PER_MINUTE, win.index, 100, 5, 1, 0.25)
        assert small[0] == 5
        refused = await ledger.grant(s, "org_a", REQUESTS_PER_MINUTE, win.index, 100, 100, 71, 0.25)
        assert refused == (0, ledger.Counter(0, 30, False))  # 70 left < need
        needed = await ledger.grant(s, "org_a", REQUESTS_PER_MINUTE, win.index, 100, 1000, 60, 0.25)
        assert needed[0] == 60  # need beats the fraction
        last = await ledger.grant(s, "org_a", REQUESTS_PER_MINUTE, win.index, 100, 100, 0, 0.25)
        assert last == (3, ledger.Counter(0, 93, False))  # ceil(10 * 0.25)
    assert (await _counter(sessions, "org_a", REQUESTS_PER_MINUTE, win.index)).remaining(100) == 7


async def test_exhaustion_is_announced_once_and_cleared_by_a_grant(sessions: Sessions) -> None:
    win = window_for(MONTHLY_TOKENS, datetime.now(UTC), 60)
    async with sessions.begin() as s:
        await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_TOKENS, win)
        assert await ledger.mark_exhausted(s, "org_a", MONTHLY_TOKENS, win.index)
        assert not await ledger.mark_exhausted(s, "org_a", MONTHLY_TOKENS, win.index)
    assert (await _counter(sessions, "org_a", MONTHLY_TOKENS, win.index)).exhausted
    async with sessions.begin() as s:
        amount, after = await ledger.grant(s, "org_a", MONTHLY_TOKENS, win.index, 10, 1, 1, 1.0)
        assert amount == 1 and not after.exhausted
        assert await ledger.mark_exhausted(s, "org_a", MONTHLY_TOKENS, win.index)
        assert not await ledger.mark_exhausted(s, "org_x", MONTHLY_TOKENS, win.index)  # no such counter


async def test_leases_settle_once_and_adjustments_correct_the_spend(sessions: Sessions) -> None:
    now = datetime.now(UTC)
    win = window_for(MONTHLY_TOKENS, now, 60)
    expire = now + timedelta(minutes=1)
    async with sessions.begin() as s:
        await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_TOKENS, win)
        amount, _ = await ledger.grant(s, "org_a", MONTHLY_TOKENS, win.index, 1000, 300, 1, 1.0)
        assert amount == 300
        await ledger.add_lease(s, "lse_1", "n" * 200, "org_a", MONTHLY_TOKENS, win.index, 100, expire)
        await ledger.add_lease(s, "lse_2", "n1", "org_a", MONTHLY_TOKENS, win.index, 150, expire)
        await ledger.add_lease(s, "lse_3", "n1", "org_a", MONTHLY_TOKENS, win.index, 50, expire)
    async with sessions.begin() as s:
        assert await ledger.settle_lease(s, "lse_1", 40)
        assert not await ledger.settle_lease(s, "lse_1", 40)  # once only
        assert await ledger.settle_lease(s, "lse_2", None)  # None: spent in full
        assert await ledger.settle_lease(s, "lse_3", -5)  # never a negative spend
        assert not await ledger.settle_lease(s, "lse_none", 1)
    assert await _counter(sessions, "org_a", MONTHLY_TOKENS, win.index) == ledger.Counter(190, 0, False)
    async with sessions.begin() as s:
        await ledger.adjust(s, "org_a", MONTHLY_TOKENS, win.index, 7)
        await ledger.adjust(s, "org_a", MONTHLY_TOKENS, win.index, -2)
    assert (await _counter(sessions, "org_a", MONTHLY_TOKENS, win.index)).settled == 195


async def test_expired_leases_are_reclaimed_in_full_and_ended_windows_pruned(sessions: Sessions) -> None:
    now = datetime.now(UTC)
    month = window_for(MONTHLY_TOKENS, now, 60)
    minute = window_for(REQUESTS_PER_MINUTE, now, 60)
    budget = window_for(BUDGET, now, 60)
    async with sessions.begin() as s:
        await ledger.ensure_counter(s, "org_a", "org_a", MONTHLY_TOKENS, month)
        await ledger.ensure_counter(s, "org_a", "org_a", REQUESTS_PER_MINUTE, minute)
        await ledger.ensure_counter(s, "org_a", "key_1", BUDGET, budget)
        await ledger.grant(s, "org_a", MONTHLY_TOKENS, month.index, 1000, 60, 1, 1.0)
        for i, (amount, ttl) in enumerate([(10, -2), (20, -1), (30, 60)]):
            expire = now + timedelta(seconds=ttl)
            await ledger.add_lease(s, f"lse_{i}", "n1", "org_a", MONTHLY_TOKENS, month.index, amount, expire)
    async with sessions.begin() as s:
        assert await ledger.reclaim_expired(s, now, limit=1) == 1
        assert await ledger.reclaim_expired(s, now) == 1
        assert await ledger.reclaim_expired(s, now) == 0  # the live lease stays
    assert await _counter(sessions, "org_a", MONTHLY_TOKENS, month.index) == ledger.Counter(30, 30, False)
    async with sessions.begin() as s:
        assert await ledger.prune(s, now - timedelta(days=1)) == 0
        assert await ledger.prune(s, now + timedelta(days=40)) == 2  # the minute and the month
    async with sessions() as s:
        assert await ledger.read(s, "key_1", BUDGET, budget.index) is not None  # never ends
        assert await ledger.read(s, "org_a", MONTHLY_TOKENS, month.index) is None
