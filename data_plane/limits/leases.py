"""Getting leases: one AcquireLeases call at a time per lane, sized to the lane's recent rate and
the control plane's latency, started before the pool runs out; grants, renewals and returns.

Sizing: a lane asks for ``horizon`` seconds of its traffic, where ``horizon`` is
``ODOCK_LIMIT_LEASE_SECONDS`` or ``WANT_LATENCIES`` round trips of the control plane if that is
longer (capped at a tenth of a per-minute window), plus whatever its queue still needs; it asks
again (prefetch, ``need`` 0) when the pool drops under half of that, so a node at a steady rate
has ``WANT_LATENCIES / 2`` round trips of traffic in hand when the call starts. A failed call
backs the lane off (``BACKOFF_MIN`` doubling to ``BACKOFF_MAX``): no new call and, for requests
the pool cannot cover, 503 at once, until it expires or the watch stream reconnects.

``LeaseFetcher`` is owned by the limiter and tells it how each call ended through
``LeaseListener`` (the limiter wakes the lanes' queues and tracks whether the control plane is away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from data_plane.governance.domain import ControlPlaneUnavailable
from data_plane.limits.lanes import NEVER, Lane
from data_plane.limits.pools import Pool, PoolKey, grant_window_end, scale, to_cp_up
from data_plane.limits.rules import Denial
from data_plane.settings import LimitSettings
from odock.limitmetrics import PER_MINUTE, RETURNABLE
from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.limits")

UNLIMITED_SECONDS = 60.0
WANT_LATENCIES = 8
BACKOFF_MIN = 0.25
BACKOFF_MAX = 2.0
RENEW_LAST_RESORT = 0.75  # of a lease's TTL: returned even if no renewal call succeeded


class LeaseSource(Protocol):
    """The AcquireLeases call (``ControlPlaneLink``)."""

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]: ...


class LeaseListener(Protocol):
    """Who hears how each call ended (the ``Limiter``)."""

    def answered(self, lanes: list[Lane], ok: bool) -> None:
        """A call for ``lanes`` (none: returns only) ended: ``ok``, the control plane answered and
        the grants are in the lanes' pools; else it failed (the lanes are backed off)."""
        ...


class LeaseFetcher:
    """Keeps the lanes of the limiter's table supplied with leases, and delivers returns."""

    def __init__(
        self,
        source: LeaseSource,
        settings: LimitSettings,
        lanes: dict[PoolKey, Lane],
        listener: LeaseListener,
        clock: Callable[[], float],
        wall: Callable[[], float],
    ) -> None:
        self._source = source
        self._settings = settings
        self._lanes = lanes  # the limiter's table: this drops the idle lanes from it
        self._listener = listener
        self._clock = clock
        self._wall = wall
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending: list[node_pb2.LeaseReturn] = []  # returns and corrections not yet delivered
        self._latency = 0.0  # smoothed AcquireLeases round trip, seconds
        self.minute_seconds = 60.0  # the control plane's "minute", as its latest per-minute grant said

    # -- calls ----------------------------------------------------------------------------

    def prefetch(self, lanes: list[Lane]) -> None:
        """Start a call for those of ``lanes`` not filling nor backed off (running low)."""
        now = self._clock()
        due = [lane for lane in lanes if not lane.filling and lane.fail_until <= now]
        if due:
            self.fill(due)

    def fill(self, lanes: list[Lane]) -> None:
        """Start one call for ``lanes`` (none of them filling); its asks are sized when it starts."""
        for lane in lanes:
            lane.filling = True
        task = asyncio.ensure_future(self._run_fill(lanes))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ControlPlaneUnavailable):
                log.warning("limits background call failed: %s", type(exc).__name__)

    async def stop(self) -> None:
        """Cancel the calls under way (and wait for them to end)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _run_fill(self, lanes: list[Lane]) -> None:
        ok = False
        try:
            # Sized now, not when launched: requests queued meanwhile are in the demand.
            wall, now = self._wall(), self._clock()
            asks = [self._ask(lane, wall, now) for lane in lanes]
            returns, self.pending = self.pending, []
            try:
                grants = await self._source.acquire_leases(asks, returns)
            except BaseException:
                self.pending = returns + self.pending
                raise
            taken = self._clock() - now
            self._latency = taken if self._latency <= 0 else 0.7 * self._latency + 0.3 * taken
            wall, now = self._wall(), self._clock()
            for lane, grant in zip(lanes, grants, strict=True):
                self._apply(lane, grant, wall, now)
            ok = True
        except ControlPlaneUnavailable:
            for lane in lanes:
                self._back_off(lane)
        except Exception:
            log.exception("limits: lease call failed")
            for lane in lanes:
                self._back_off(lane)
        finally:
            for lane in lanes:
                lane.filling = False
        self._listener.answered(lanes, ok)

    def _back_off(self, lane: Lane) -> None:
        lane.backoff = min(BACKOFF_MAX, max(BACKOFF_MIN, lane.backoff * 2))
        lane.fail_until = self._clock() + lane.backoff

    def _horizon(self) -> float:
        return max(self._settings.lease_seconds, WANT_LATENCIES * self._latency)

    def _ask(self, lane: Lane, wall: float, now: float) -> node_pb2.LeaseAsk:
        lane.sample_rate(now)
        pool = lane.pool
        have = pool.available if pool is not None and pool.current(wall) else 0
        window_seconds = pool.window_seconds if pool is not None else 0.0
        head = lane.waiters[0].amount_for(lane) if lane.waiters else 0
        if lane.avg <= 0:
            lane.avg = head  # nothing taken yet: the first request is the best guess of the next
        need = max(0, head - have)
        # What the queue needs, else the next horizon of traffic; a deficit is paid first.
        want = max(need, lane.demand - have, lane.want(self._horizon(), window_seconds) - min(0, have))
        if lane.renew:
            want = max(want, have)  # replaces what the leases being renewed still hold
        return node_pb2.LeaseAsk(
            org_id=lane.org_id,
            key_id=lane.key_id,
            metric=lane.metric,  # type: ignore[arg-type]
            want=to_cp_up(lane.metric, want),
            # A prefetch needs nothing: its refusal is no sign the limit is used up.
            need=to_cp_up(lane.metric, need) if need > 0 else 0,
        )

    def _apply(self, lane: Lane, grant: node_pb2.LeaseGrant, wall: float, now: float) -> None:
        lane.backoff = lane.fail_until = 0.0
        if grant.unlimited:
            lane.unlimited_until = wall + UNLIMITED_SECONDS
            lane.denied = None
            self.retire(lane)
            return
        self._track(lane, grant)
        end = grant_window_end(grant)
        if grant.amount <= 0:
            if lane.metric in PER_MINUTE and end is not None:
                until = now + max(0.0, end - wall)
            else:
                until = now + self._settings.recheck_seconds
            lane.denied = Denial(until=until, window_end=end)
            lane.low_water = NEVER
            if lane.pool is not None:
                lane.pool.set_remaining(grant.remaining)
            if lane.renew:
                self._renewed(lane, wall)
            return
        lane.denied = None
        pool = lane.pool
        if pool is None or pool.window != grant.window:
            self.retire(lane)
            pool = lane.pool = Pool(
                lane.org_id, lane.key_id, lane.metric, grant.window, end, grant.window_seconds
            )
        pool.add(grant)
        if lane.renew:
            self._renewed(lane, wall)
        one = max(lane.avg, 1)
        if pool.headroom < one:
            lane.low_water = NEVER  # nothing left to grant at this ask: prefetching would only cost calls
        else:
            lane.low_water = max(one, lane.want(self._horizon(), pool.window_seconds) // 2)

    def _track(self, lane: Lane, grant: node_pb2.LeaseGrant) -> None:
        """Keep what an outage would go on (data_plane/limits/degraded.py)."""
        if lane.metric in PER_MINUTE:
            if grant.window != lane.gwin:
                if lane.gshare >= 0:
                    lane.share = lane.gshare  # the latest window this node had grants in, complete
                lane.gwin, lane.granted = grant.window, 0
            lane.granted += grant.amount
            total = grant.limit - grant.remaining
            lane.gshare = min(1.0, lane.granted / total) if total > 0 else 1.0
            if grant.window_seconds > 0:
                self.minute_seconds = grant.window_seconds
        else:
            lane.dleft = grant.remaining * scale(lane.metric)
            lane.dtaken = 0

    def retire(self, lane: Lane) -> None:
        """Drop the lane's pool (returning its leases if it has any)."""
        pool = lane.pool
        if pool is None:
            return
        lane.pool = None
        if pool.metric in RETURNABLE:
            self.pending.extend(pool.return_all())
        pool.live = False

    def _renewed(self, lane: Lane, wall: float, fraction: float = 0.5) -> None:
        """Return the leases past ``fraction`` of their TTL (the grant just added replaces them)."""
        lane.renew = False
        pool = lane.pool
        if pool is None:
            return
        for lease in list(pool.leases):
            if wall >= lease.issued_at + (lease.expire_at - lease.issued_at) * fraction:
                self.pending.append(pool.return_lease(lease))

    # -- housekeeping -------------------------------------------------------------------------

    def housekeep(self, connected: bool) -> bool:
        """Window ends, idle returns, renewals; drops idle lanes (True when it dropped any)."""
        wall, now = self._wall(), self._clock()
        renew: list[Lane] = []
        idle: list[PoolKey] = []
        for key, lane in self._lanes.items():
            pool = lane.pool
            if pool is not None and not pool.current(wall):
                self.retire(lane)
            elif pool is not None and pool.metric in RETURNABLE and connected:
                if wall - pool.last_used > self._settings.idle_return_seconds and not lane.waiters:
                    self.retire(lane)
                elif any(wall >= ls.issued_at + (ls.expire_at - ls.issued_at) / 2 for ls in pool.leases):
                    lane.renew = True
                    if not lane.filling and lane.fail_until <= now:
                        renew.append(lane)
                    else:
                        self._renewed(lane, wall, RENEW_LAST_RESORT)
            if lane.idle(wall, now):
                idle.append(key)
        for key in idle:
            del self._lanes[key]
        if renew:
            self.fill(renew)
        return bool(idle)

    async def send_returns(self) -> None:
        """Deliver the pending returns and corrections (ControlPlaneUnavailable: kept for later)."""
        returns, self.pending = self.pending, []
        if not returns:
            return
        try:
            await self._source.acquire_leases([], returns)
        except ControlPlaneUnavailable:
            self.pending = returns + self.pending
            self._listener.answered([], False)
            raise
        self._listener.answered([], True)
