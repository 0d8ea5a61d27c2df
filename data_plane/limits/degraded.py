"""Fail-open while the control plane is away: each limit enforced locally from its last known state.

**Away** (``Limiter.away``): the watch stream is down, or the latest ``AcquireLeases`` call failed
(error or RPC timeout), or a request queued ``ODOCK_LIMIT_WAIT_SECONDS`` without an answer. It ends
with the next successful call or the watch stream's reconnection. While away, a fail-open org's
request that the held leases cannot cover is not queued for a call: what it lacks is added to the
lane's pool from a **local allowance**, and once that is spent it gets the limit's 429:

- per-minute limits, per window (aligned on the epoch, of the length last granted):
  ``ceil(limit × share)`` in all, the leases granted for that window included, where ``share`` is
  this node's fraction of the scope's grants in its latest complete window (what this node was
  granted / what was granted to all at its last grant there), clamped to ``[MIN_SHARE, 1]``;
- monthly quota, spend cap and key budget: what the control plane had granted to no one at this
  node's last answer (``remaining``), once for the whole outage; never asked: ``MIN_SHARE`` of the limit.

Fail-closed orgs get none of this (503 as before). Local units go into the same pools as leased
ones, so settlement, headers and, for the long windows, the returns after the outage (the ledger
charges what was spent) work unchanged. docs/limits.md gives the worst-case overshoot.

``Degraded`` is owned by the limiter, which tells it when an outage is seen and when it ends.
"""

from __future__ import annotations

import logging
import math
import time
from calendar import monthrange

from data_plane.errors import GatewayError
from data_plane.limits.lanes import Lane
from data_plane.limits.leases import LeaseFetcher
from data_plane.limits.pools import PICOS_PER_USD, Pool, PoolKey, adjustment, scale
from data_plane.limits.rules import Denial, refusal
from odock.limitmetrics import MONEY, MONTHLY, PER_MINUTE, RETURNABLE

log = logging.getLogger("odock.data_plane.limits")

MIN_SHARE = 0.1  # of a limit, per window (per-minute) or per outage (long windows), for any node


def month_window(wall: float) -> tuple[int, float]:
    """The control plane's month index (``year * 12 + month - 1``, UTC) of ``wall`` and its end."""
    t = time.gmtime(wall)
    start_of_month = wall - ((t.tm_mday - 1) * 86400 + t.tm_hour * 3600 + t.tm_min * 60 + t.tm_sec)
    start_of_month -= wall % 1
    return t.tm_year * 12 + t.tm_mon - 1, start_of_month + monthrange(t.tm_year, t.tm_mon)[1] * 86400


class Degraded:
    """The limiter's outages: their log lines and counters, local allowances, reconciliation."""

    def __init__(self, lanes: dict[PoolKey, Lane], leases: LeaseFetcher) -> None:
        self._lanes = lanes  # the limiter's table
        self._leases = leases
        self.logged = False  # an outage began (logged) and has not ended yet
        self.admissions = 0  # admitted while away (from leases or local allowances)
        self.local_admissions = 0  # of those, the ones that drew on a local allowance
        self.outages = 0

    # -- the state ------------------------------------------------------------------------

    def back(self) -> None:
        """The control plane is back: reconcile, and log the end of the outage."""
        self.logged = False
        self._reconcile()
        log.warning(
            "limits: control plane back, leaving degraded mode (%d admissions while away, %d on local limits)",
            self.admissions, self.local_admissions,
        )  # fmt: skip

    def admitted(self, local: bool) -> None:
        """A request was admitted while away (``local``: on a local allowance)."""
        self.admissions += 1
        if local:
            self.local_admissions += 1
        if not self.logged:
            self.logged = True
            self.outages += 1
            log.warning(
                "limits: control plane away; fail-open orgs are admitted on local limits until it is back "
                "(docs/limits.md)"
            )

    def _reconcile(self) -> None:
        """Give back the long windows' pools that drew on local units: what the leases cover goes
        back with them, the rest as an adjustment, so the ledger charges the outage's spend even
        for leases it reclaimed meanwhile (counted as spent in full, their returns ignored)."""
        for lane in self._lanes.values():
            pool = lane.pool
            local, lane.dtaken = lane.dtaken, 0
            if pool is None or local <= 0 or lane.metric not in RETURNABLE:
                continue
            leased = pool.amount - local
            spent = pool.amount - pool.available
            beyond = max(0, spent - leased)
            pool.amount, pool.available = leased, leased - min(spent, leased)
            fix = adjustment(lane.org_id, lane.key_id, lane.metric, pool.window, beyond)
            self._leases.retire(lane)
            if fix is not None:
                self._leases.pending.append(fix)

    # -- local allowances ---------------------------------------------------------------------

    def local(self, lane: Lane, amount: int, wall: float) -> GatewayError | None:
        """Cover ``amount`` on ``lane`` from its local allowance (None), or the limit's 429."""
        if lane.metric in PER_MINUTE:
            ok = self._local_minute(lane, amount, wall)
        else:
            ok = self._local_long(lane, amount, wall)
        if ok:
            return None
        pool = lane.pool
        return refusal(lane.metric, bool(lane.key_id), Denial(0.0, pool.window_end if pool else None), wall)

    def _fresh_pool(self, lane: Lane, window: int, end: float | None, seconds: float) -> Pool:
        self._leases.retire(lane)
        pool = lane.pool = Pool(lane.org_id, lane.key_id, lane.metric, window, end, seconds)
        units = scale(lane.metric)
        pool.limit = lane.hint // units
        pool.limit_text = f"{lane.hint / PICOS_PER_USD:.6f}" if lane.metric in MONEY else str(pool.limit)
        return pool

    def _local_minute(self, lane: Lane, amount: int, wall: float) -> bool:
        pool = lane.pool
        if pool is None or not pool.current(wall):
            seconds = (
                pool.window_seconds
                if pool is not None and pool.window_seconds > 0
                else self._leases.minute_seconds
            )
            index = int(wall // seconds)
            pool = self._fresh_pool(lane, index, (index + 1) * seconds, seconds)
        share = lane.share if lane.share >= 0 else lane.gshare
        cap = math.ceil(lane.hint * min(1.0, max(MIN_SHARE, share)))
        lack = amount - pool.available
        if pool.amount + lack > cap:  # what this node put in the window's pool: leases and local units
            return False
        pool.amount += lack
        pool.available += lack
        pool.headroom = cap - pool.amount  # what the headers show as left beyond the pool
        lane.dtaken += lack
        return True

    def _local_long(self, lane: Lane, amount: int, wall: float) -> bool:
        pool = lane.pool
        if pool is None or not pool.current(wall):
            if lane.metric in MONTHLY:
                index, end = month_window(wall)
                pool = self._fresh_pool(lane, index, end, 0.0)
            else:
                pool = self._fresh_pool(lane, 0, None, 0.0)
        left = lane.dleft if lane.dleft >= 0 else math.ceil(lane.hint * MIN_SHARE)
        lack = amount - pool.available
        if lane.dtaken + lack > left:
            return False
        pool.amount += lack
        pool.available += lack
        lane.dtaken += lack
        pool.headroom = max(0, left - lane.dtaken)
        return True
