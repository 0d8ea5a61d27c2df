"""Admission against org and key limits from locally held leases (docs/limits.md).

A request reserves what it needs from this node's pools without waiting when every pool it
uses covers it and nobody is queued there. Otherwise it queues, FIFO, on every lane it uses, and
is admitted when it is at the head of all of them and they all cover it; a short lane gets one
``AcquireLeases`` call at a time (several short lanes share it) whose grant wakes the queue. A
request is refused (429) only when the control plane granted nothing to a request that needed
it. When the control plane is away, a fail-open org's requests are admitted on local limits
(``degraded.py``) without waiting on a call; a fail-closed org's get 503. Pools are refilled in
the background before they run out.
Settlement corrects each reservation to the actual usage once the response is done.

The limiter owns a ``LeaseFetcher`` (``leases.py``: the calls, which report back through
``Limiter.answered``) and a ``Degraded`` (``degraded.py``: outages and local allowances).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from data_plane.errors import GatewayError
from data_plane.governance.domain import ControlPlaneUnavailable, KeyGrant, Link
from data_plane.limits.admission import Admission
from data_plane.limits.degraded import Degraded
from data_plane.limits.estimate import Estimate
from data_plane.limits.lanes import REQUESTS, TOKENS, Lane, Plan, Waiter, plan_for
from data_plane.limits.leases import LeaseFetcher, LeaseSource
from data_plane.limits.pools import Pool, PoolKey, adjustment
from data_plane.limits.rules import refusal, unavailable
from data_plane.settings import LimitSettings
from odock.limitmetrics import RETURNABLE

log = logging.getLogger("odock.data_plane.limits")

TICK_SECONDS = 0.5


class Limiter:
    """Holds this worker's leases and admits, refuses and settles requests against them."""

    def __init__(
        self,
        source: LeaseSource,
        link: Link,
        settings: LimitSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._link = link
        self._clock = clock
        self._wall = wall
        self._lanes: dict[PoolKey, Lane] = {}
        self._plans: dict[str, Plan] = {}
        self._call_failed = False  # the latest call failed (or a wait expired): the control plane is away
        self._leases = LeaseFetcher(source, settings, self._lanes, self, clock, wall)
        self._degraded = Degraded(self._lanes, self._leases)
        self.admitted = 0
        self.refused: Counter[str] = Counter()

    @property
    def away(self) -> bool:
        """Whether the control plane counts as away (``degraded.py``'s docstring)."""
        return self._call_failed or not self._link.connected

    @property
    def degraded_admissions(self) -> int:
        """Admitted while away (from leases or local allowances)."""
        return self._degraded.admissions

    @property
    def degraded_local(self) -> int:
        """Admitted while away on a local allowance."""
        return self._degraded.local_admissions

    # -- admission ------------------------------------------------------------------

    async def admit(self, grant: KeyGrant, est: Estimate) -> Admission:
        """Reserve what the request needs, or raise a GatewayError (429, or 503 without leases)."""
        plan = self._plans.get(grant.key_id)
        if plan is None or plan.limits is not grant.limits:
            plan = self._plan(grant)
        tokens, picos = est.tokens, est.picos
        wall = self._wall()
        for lane in plan.lanes:
            kind = lane.kind
            amount = 1 if kind == REQUESTS else tokens if kind == TOKENS else picos
            if amount <= 0:
                continue  # an unpriced request does not touch the money limits
            pool = lane.pool
            if lane.waiters or pool is None or pool.available < amount:
                break
            end = pool.window_end
            if end is not None and wall >= end:
                break
        else:
            return self._take(plan, tokens, picos, wall, None)
        plan.fail_closed = grant.fail_closed
        return await self._admit_slow(plan, tokens, picos, wall)

    def _plan(self, grant: KeyGrant) -> Plan:
        plan = self._plans.get(grant.key_id)
        if plan is not None and plan.org_id == grant.org_id and plan.limits == grant.limits:
            plan.limits = grant.limits  # the same limits in a refreshed grant: identity hits from now on
            return plan
        plan = self._plans[grant.key_id] = plan_for(grant, self._lanes, self._clock())
        return plan

    def _take(
        self,
        plan: Plan,
        tokens: int,
        picos: int,
        wall: float,
        skip: frozenset[Lane] | None,
        local: bool = False,
    ) -> Admission:
        pools: list[Pool | None] = []
        low: list[Lane] | None = None
        for lane in plan.lanes:
            kind = lane.kind
            amount = 1 if kind == REQUESTS else tokens if kind == TOKENS else picos
            pool = lane.pool
            if pool is None or amount <= 0 or (skip is not None and lane in skip):
                pools.append(None)
                continue
            pool.available -= amount
            pool.last_used = wall
            lane.spent += amount
            lane.count += 1
            if pool.available < lane.low_water and not lane.filling:
                if low is None:
                    low = []
                low.append(lane)
            pools.append(pool)
        if low is not None:
            self._leases.prefetch(low)  # one call for every limit of this request that runs low
        self.admitted += 1
        if self._call_failed or not self._link.connected:
            self._degraded.admitted(local)
        return Admission(self, plan, pools, tokens, picos)

    async def _admit_slow(self, plan: Plan, tokens: int, picos: int, wall: float) -> Admission:
        now = self._clock()
        needs: list[tuple[Lane, int]] = []
        unlimited: set[Lane] = set()
        for lane in plan.lanes:
            amount = 1 if lane.kind == REQUESTS else tokens if lane.kind == TOKENS else picos
            if amount <= 0:
                continue
            if lane.unlimited_until > wall:
                unlimited.add(lane)
                continue
            needs.append((lane, amount))
        # A refusal matters only where the pool cannot cover: what is held still serves requests.
        local = False
        for lane, amount in needs:
            if not lane.covers(amount, wall):
                err = self._verdict(lane, amount, plan, now, wall)
                if err is not None:
                    self.refused[err.code] += 1
                    raise err
                local = local or lane.covers(amount, wall)  # covered now: locally, the control plane away
        skip = frozenset(unlimited) if unlimited else None
        if all(not lane.waiters and lane.covers(amount, wall) for lane, amount in needs):
            return self._take(plan, tokens, picos, wall, skip, local)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Admission] = loop.create_future()
        waiter = Waiter(needs, plan, tokens, picos, future, skip)
        for lane, amount in needs:
            lane.waiters.append(waiter)
            lane.demand += amount
        waiter.timer = loop.call_later(self._settings.wait_seconds, self._expire, waiter)
        self._dispatch([lane for lane, _ in needs])
        try:
            return await future
        except asyncio.CancelledError:
            # The client went away while queued (or just as it was admitted: give that back).
            self._leave(waiter)
            if future.done() and not future.cancelled() and future.exception() is None:
                future.result().settle(0, 0)
            raise

    def _verdict(self, lane: Lane, amount: int, plan: Plan, now: float, wall: float) -> GatewayError | None:
        """Why a lane that cannot cover a request refuses it now (None: asking may help, or, the
        control plane away and the org fail-open, the lane now covers it from its local allowance)."""
        denial = lane.denied
        if denial is not None:
            if denial.until > now:
                return refusal(lane.metric, bool(lane.key_id), denial, wall)
            lane.denied = None
        if not plan.fail_closed and (self._call_failed or not self._link.connected):
            err = self._degraded.local(lane, amount, wall)
            if err is None:
                self._leases.prefetch([lane])  # in the background: a call that succeeds ends the outage
            return err
        if lane.fail_until > now:
            return unavailable()
        return None

    # -- the waiters' queues --------------------------------------------------------------

    def _dispatch(self, lanes: Iterable[Lane]) -> None:
        """Admit or refuse queued requests from the heads of ``lanes``; ask for what is short."""
        wall, now = self._wall(), self._clock()
        work = list(lanes)
        short: dict[Lane, None] = {}
        while work:
            lane = work.pop()
            while lane.waiters:
                waiter = lane.waiters[0]
                if not self._settle_waiter(waiter, wall, now, short):
                    break
                work.extend(other for other, _ in waiter.needs if other is not lane)
        fill = [lane for lane in short if not lane.filling and lane.fail_until <= now]
        if fill:
            self._leases.fill(fill)

    def _settle_waiter(self, waiter: Waiter, wall: float, now: float, short: dict[Lane, None]) -> bool:
        """Admit or refuse ``waiter`` if it can be now (True), else note the lanes it lacks."""
        lacking = False
        behind = False
        for lane, amount in waiter.needs:
            if not lane.covers(amount, wall):
                err = self._verdict(lane, amount, waiter.plan, now, wall)
                if err is not None:
                    self._finish(waiter, None, err)
                    return True
                if not lane.covers(amount, wall):
                    short[lane] = None
                    lacking = True
                    continue
                waiter.local = True
            if lane.waiters[0] is not waiter:
                behind = True
        if lacking or behind:
            return False
        plan = waiter.plan
        self._finish(
            waiter, self._take(plan, waiter.tokens, waiter.picos, wall, waiter.skip, waiter.local), None
        )
        return True

    def _finish(self, waiter: Waiter, admission: Admission | None, err: GatewayError | None) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        for lane, amount in waiter.needs:
            if lane.waiters and lane.waiters[0] is waiter:
                lane.waiters.popleft()
            else:
                lane.waiters.remove(waiter)
            lane.demand -= amount
        if err is not None:
            self.refused[err.code] += 1
            waiter.future.set_exception(err)
        elif admission is not None:
            waiter.future.set_result(admission)

    def _leave(self, waiter: Waiter) -> None:
        """Take a waiter that gave up out of its queues; whoever was behind it may go now."""
        if waiter.timer is not None:
            waiter.timer.cancel()
        touched = []
        for lane, amount in waiter.needs:
            with contextlib.suppress(ValueError):
                lane.waiters.remove(waiter)
                lane.demand -= amount
                touched.append(lane)
        if touched:
            self._dispatch(touched)

    def _expire(self, waiter: Waiter) -> None:
        """The wait deadline passed: the control plane did not answer in time."""
        if waiter.future.done():
            return
        if not waiter.plan.fail_closed:
            self._call_failed = True  # away until a call succeeds: this queue is served locally now
            self._dispatch([lane for lane, _ in waiter.needs])
            if waiter.future.done():
                return
        self._leave(waiter)
        if not waiter.future.done():
            err = unavailable()
            self.refused[err.code] += 1
            waiter.future.set_exception(err)

    def answered(self, lanes: list[Lane], ok: bool) -> None:
        """How a lease call ended (``LeaseListener``): whether the control plane is away; the
        lanes' queues served from what it brought."""
        if ok:
            self._call_failed = False
            if self._degraded.logged and self._link.connected:
                self._degraded.back()
        else:
            self._call_failed = True
        self._woken(lanes)

    def _woken(self, lanes: list[Lane]) -> None:
        waiting = [lane for lane in lanes if lane.waiters]
        if waiting:
            self._dispatch(waiting)

    # -- settlement -------------------------------------------------------------------

    def correct(self, lane: Lane, pool: Pool, delta: int) -> None:
        """Charge ``delta`` more (or, negative, less) than reserved to the pool it was taken from."""
        if pool.live:
            pool.available -= delta
            if delta < 0 and lane.waiters:
                self._dispatch([lane])
        elif lane.metric in RETURNABLE:
            fix = adjustment(lane.org_id, lane.key_id, lane.metric, pool.window, delta)
            if fix is not None:
                self._leases.pending.append(fix)
        # Per-minute windows that already ended: nothing left to correct.

    def charge(self, org_id: str, key_id: str, metric: int, window: int, amount: int, wall: float) -> None:
        """Count ``amount`` nobody reserved (a finished batch's usage) against ``metric`` of the org
        (``key_id`` empty) or of the key: from this node's live pool of the window, else as an
        adjustment the control plane applies with the next lease call."""
        lane = self._lanes.get((key_id or org_id, metric))
        pool = lane.pool if lane is not None else None
        if lane is not None and pool is not None and pool.live and pool.current(wall):
            self.correct(lane, pool, amount)
            return
        fix = adjustment(org_id, key_id, metric, window, amount)
        if fix is not None:
            self._leases.pending.append(fix)

    # -- events from the watch stream ------------------------------------------------------

    def exhausted(self, org_id: str, key_id: str) -> None:
        """A monthly/lifetime limit of this scope ran out somewhere: give back what we hold of it."""
        scope = key_id or org_id
        lanes = [ln for ln in self._lanes.values() if ln.key[0] == scope and ln.metric in RETURNABLE]
        for lane in lanes:
            self._leases.retire(lane)
        # Delivered with the next ask (so what comes back is grantable to it) or by housekeeping.
        self._woken(lanes)

    def changed(self, org_id: str, key_id: str) -> None:
        """The scope's limits may have changed: forget refusals and 'unlimited' answers."""
        scope = key_id or org_id
        for lane in self._lanes.values():
            if lane.key[0] == scope:
                lane.denied = None
                lane.unlimited_until = 0.0

    def flushed(self) -> None:
        """Reconnected or reset: every cached refusal, 'unlimited' answer and failure may be stale."""
        for lane in self._lanes.values():
            lane.denied = None
            lane.unlimited_until = 0.0
            lane.fail_until = lane.backoff = 0.0
        self._call_failed = False  # the watch stream is back (connected once this returns)
        if self._degraded.logged:
            self._degraded.back()  # leave degraded mode now, before any request asks on stale state

    # -- background -----------------------------------------------------------------------

    async def run(self) -> None:
        """Housekeeping forever (cancel to stop): window ends, idle returns, renewals, corrections."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                if self._leases.housekeep(self._link.connected):
                    self._plans.clear()  # some lanes were dropped: plans are rebuilt on use
                self._woken(list(self._lanes.values()))
                if self._degraded.logged and not self.away:
                    self._degraded.back()  # the end of an outage, once nothing counts as away
                if self._leases.pending and self._link.connected:
                    await self._leases.send_returns()
            except ControlPlaneUnavailable:
                pass
            except Exception:
                log.exception("limits housekeeping failed")

    async def close(self, timeout: float = 2.0) -> None:
        """Give back every returnable lease (best effort) and stop background calls."""
        await self._leases.stop()
        for lane in self._lanes.values():
            while lane.waiters:
                self._finish(lane.waiters[0], None, unavailable())
            self._leases.retire(lane)
        if self._leases.pending:
            with contextlib.suppress(ControlPlaneUnavailable, TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._leases.send_returns()

    def status(self) -> dict[str, Any]:
        """Counters and held leases for the /readyz status object."""
        return {
            "enabled": True,
            "admitted": self.admitted,
            "degraded": self.away,
            "degraded_admissions": self._degraded.admissions,
            "degraded_local": self._degraded.local_admissions,
            "outages": self._degraded.outages,
            "refused": dict(self.refused),
            "pending_returns": len(self._leases.pending),
            "waiting": len({id(waiter) for lane in self._lanes.values() for waiter in lane.waiters}),
            "pools": [lane.pool.status() for lane in self._lanes.values() if lane.pool is not None],
        }


__all__ = ["Limiter"]
