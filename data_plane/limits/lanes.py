"""Per-limit state on the node: a lane per (scope, metric) with its pool, its FIFO of waiting
requests and its lease-fill bookkeeping; a plan per key listing the lanes its requests reserve from.

Lanes outlive windows (a new window replaces ``lane.pool``), so a key's plan is built once and
the per-request path is a few attribute reads per limit.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from data_plane.governance.domain import GrantLimits, KeyGrant
from data_plane.limits.pools import PICOS_PER_MICRO, Pool, PoolKey
from data_plane.limits.rules import Denial
from odock.limitmetrics import (
    BUDGET,
    MONEY,
    MONTHLY_SPEND,
    MONTHLY_TOKENS,
    REQUESTS_PER_MINUTE,
    TOKENS_PER_MINUTE,
)

REQUESTS, TOKENS, MONEY_KIND = 0, 1, 2  # what one request reserves from a lane: 1, its tokens, its cost
NEVER = -(1 << 62)  # a low-water mark no pool goes under: no prefetch
INITIAL_WANT_MULTIPLE = 4  # no rate known yet: ask for this many requests' worth
IDLE_LANE_SECONDS = 120.0  # a lane unused this long (and holding nothing) is forgotten, rate and all


class Waiter:
    """A request queued on every lane it reserves from, until it is at the head of all of them."""

    __slots__ = ("future", "local", "needs", "picos", "plan", "skip", "timer", "tokens")

    def __init__(
        self,
        needs: list[tuple[Lane, int]],
        plan: Plan,
        tokens: int,
        picos: int,
        future: asyncio.Future[Any],
        skip: frozenset[Lane] | None,
    ) -> None:
        self.needs = needs
        self.plan = plan
        self.tokens = tokens
        self.picos = picos
        self.future = future  # the request's Admission (admission.py, which builds on this module)
        self.skip = skip  # lanes the control plane called unlimited: nothing reserved there
        self.timer: asyncio.TimerHandle | None = None
        self.local = False  # a local allowance covered it somewhere (the control plane away)

    def amount_for(self, lane: Lane) -> int:
        """What this request reserves from ``lane``."""
        for candidate, amount in self.needs:
            if candidate is lane:
                return amount
        return 0


class Lane:
    """One limit of one scope on this node: the current window's pool, waiters, fills, rate."""

    __slots__ = (
        "avg",
        "backoff",
        "count",
        "demand",
        "denied",
        "dleft",
        "dtaken",
        "fail_until",
        "filling",
        "granted",
        "gshare",
        "gwin",
        "hint",
        "key",
        "key_id",
        "kind",
        "low_water",
        "metric",
        "org_id",
        "pool",
        "rate",
        "renew",
        "share",
        "since",
        "spent",
        "unlimited_until",
        "waiters",
    )  # fmt: skip

    def __init__(self, org_id: str, key_id: str, metric: int, now: float) -> None:
        self.key: PoolKey = (key_id or org_id, metric)
        self.org_id = org_id
        self.key_id = key_id
        self.metric = metric
        self.kind = REQUESTS if metric == REQUESTS_PER_MINUTE else MONEY_KIND if metric in MONEY else TOKENS
        self.pool: Pool | None = None
        self.waiters: deque[Waiter] = deque()
        self.demand = 0  # what the waiters reserve from this lane in all (node units)
        self.filling = False  # one AcquireLeases call at a time asks for this lane
        self.renew = False  # a lease is past half its TTL: replace it with the next grant
        self.spent = 0  # taken since ``since`` (node units), and by how many requests
        self.count = 0
        self.since = now
        self.rate = 0.0  # node units per second, smoothed
        self.avg = 0  # one request's reservation, recently
        self.low_water = NEVER  # prefetch when the pool drops under this
        self.denied: Denial | None = None
        self.unlimited_until = 0.0  # unix: the control plane said "no limit" until then
        self.fail_until = 0.0  # monotonic: the last fill failed; no call (and 503 when short) until then
        self.backoff = 0.0
        # Outage bookkeeping (data_plane/limits/degraded.py): the limit as the key's grant states it
        # (node units), this node's grants in its latest per-minute window and its fraction of the
        # scope's grants there (the window before: ``share``; -1: none), for the long windows what
        # the control plane had left at its last answer (node units, -1: never asked), and what
        # was added locally while away.
        self.hint = 0
        self.gwin = -1
        self.granted = 0
        self.gshare = -1.0
        self.share = -1.0
        self.dleft = -1
        self.dtaken = 0

    def covers(self, amount: int, wall: float) -> bool:
        """Whether the current pool holds ``amount`` now."""
        pool = self.pool
        return (
            pool is not None
            and (pool.window_end is None or wall < pool.window_end)
            and pool.available >= amount
        )

    def idle(self, wall: float, now: float) -> bool:
        """Nothing held, waited for or remembered: the lane may be dropped."""
        return (
            self.pool is None and not self.waiters and not self.filling and self.unlimited_until <= wall
            and (self.denied is None or self.denied.until <= now) and self.fail_until <= now
            and now - self.since > IDLE_LANE_SECONDS
        )  # fmt: skip

    def sample_rate(self, now: float) -> None:
        """Fold what was taken since the last sample into the smoothed rate."""
        elapsed = now - self.since
        if elapsed < 0.05 and (self.count < 64 or elapsed <= 0.005):
            return
        sample = self.spent / elapsed
        # After a long pause the old rate says nothing about the traffic now.
        self.rate = sample if self.rate <= 0 or elapsed > 5.0 else 0.5 * (self.rate + sample)
        if self.count:
            self.avg = -(-self.spent // self.count)
        self.spent = self.count = 0
        self.since = now

    def want(self, horizon: float, window_seconds: float) -> int:
        """Node units to hold for ``horizon`` seconds of traffic at the recent rate (prefetch size)."""
        if window_seconds > 0:
            horizon = min(horizon, window_seconds / 10)
        if self.rate <= 0:
            return max(1, self.avg) * INITIAL_WANT_MULTIPLE
        return max(self.avg, 1, math.ceil(self.rate * horizon))


@dataclass(slots=True)
class Plan:
    """The lanes one key's requests reserve from, and which of them each header reports."""

    limits: GrantLimits
    org_id: str
    lanes: tuple[Lane, ...]
    # Indices into ``lanes`` per header group: requests/min, tokens/min, monthly quota, money.
    groups: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    fail_closed: bool = False  # the org's outage policy, as of its latest grant seen on the slow path


def plan_for(grant: KeyGrant, table: dict[PoolKey, Lane], now: float) -> Plan:
    """Build the key's plan, creating the lanes it needs in ``table`` (the limiter's table)."""
    lim, org, key = grant.limits, grant.org_id, grant.key_id
    lanes: list[Lane] = []
    # Cheapest checks first: requests (amount 1), then tokens, then money.
    for scope_key, value, metric in (
        ("", lim.org_requests_per_minute, REQUESTS_PER_MINUTE),
        (key, lim.key_requests_per_minute, REQUESTS_PER_MINUTE),
        ("", lim.org_tokens_per_minute, TOKENS_PER_MINUTE),
        (key, lim.key_tokens_per_minute, TOKENS_PER_MINUTE),
        ("", lim.org_monthly_token_quota, MONTHLY_TOKENS),
        ("", lim.org_monthly_spend_cap_micros, MONTHLY_SPEND),
        (key, lim.key_budget_micros, BUDGET),
    ):
        if value is None:
            continue
        pk = (scope_key or org, metric)
        found = table.get(pk)
        if found is None:
            found = table[pk] = Lane(org, scope_key, metric, now)
        found.hint = value * (PICOS_PER_MICRO if metric in MONEY else 1)
        lanes.append(found)
    groups = tuple(
        tuple(i for i, ln in enumerate(lanes) if ln.metric in members)
        for members in ({REQUESTS_PER_MINUTE}, {TOKENS_PER_MINUTE}, {MONTHLY_TOKENS}, MONEY)
    )
    return Plan(lim, org, tuple(lanes), groups, grant.fail_closed)  # type: ignore[arg-type]
