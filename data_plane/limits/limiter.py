"""Admission against org and key limits from locally held leases (docs/limits.md).

A request reserves what it needs from this node's pools; only when a pool
runs short does the node call ``AcquireLeases`` (one call for every limit
that is short, shared by concurrent requests), and it asks for more before
running out (prefetch, sized by its recent rate). The control plane never
sees individual requests. Settlement corrects each reservation to the actual
usage once the response is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from odock.v1 import node_pb2

from data_plane.errors import GatewayError
from data_plane.governance.types import ControlPlaneUnavailable, KeyGrant, Link
from data_plane.limits.admission import Admission, Debit
from data_plane.limits.estimate import Estimate
from data_plane.limits.pools import (
    MONEY,
    PER_MINUTE,
    RETURNABLE,
    Need,
    Pool,
    PoolKey,
    adjustment,
    grant_window_end,
    scale,
    to_cp_up,
)
from data_plane.limits.rules import Denial, needs_for, refusal, unavailable
from data_plane.settings import LimitSettings

log = logging.getLogger("odock.data_plane.limits")

# Rounds of asking for more while concurrent requests take what was granted (each round grants
# something, else the limit is refused), so this bounds only pathological contention.
ATTEMPTS = 32
UNLIMITED_SECONDS = 60.0
TICK_SECONDS = 0.5
INITIAL_WANT_MULTIPLE = 4


class LeaseSource(Protocol):
    """The AcquireLeases call (``NodeClient``)."""

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]: ...


@dataclass(slots=True)
class _Rate:
    spent: int = 0
    since: float = 0.0
    per_second: float = 0.0


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
        self._source = source
        self._link = link
        self._settings = settings
        self._clock = clock
        self._wall = wall
        self._pools: dict[PoolKey, Pool] = {}
        self._denied: dict[PoolKey, Denial] = {}
        self._unlimited: dict[PoolKey, float] = {}
        self._flights: dict[PoolKey, asyncio.Future[None]] = {}
        self._rates: dict[PoolKey, _Rate] = {}
        # What requests waiting for leases need in all, so one grant can cover a burst of them.
        self._demand: Counter[PoolKey] = Counter()
        self._pending: list[node_pb2.LeaseReturn] = []  # returns and corrections not yet delivered
        self._tasks: set[asyncio.Task[Any]] = set()
        self.degraded_admissions = 0
        self.admitted = 0
        self.refused: Counter[str] = Counter()

    # -- admission ------------------------------------------------------------------

    async def admit(self, grant: KeyGrant, est: Estimate) -> Admission:
        """Reserve what the request needs, or raise a GatewayError (429, or 503 without leases)."""
        now = self._clock()
        needs = [n for n in needs_for(grant, est) if self._unlimited.get(n.key, 0.0) <= now]
        waiting: list[Need] = []
        try:
            for _ in range(ATTEMPTS):
                wall = self._wall()
                short = [n for n in needs if not self._covers(n, wall)]
                if not short:
                    return self._take(needs, wall)
                # A refusal matters only where the pool cannot cover: a refused prefetch must
                # not stop requests that what is held still covers.
                self._refuse_denied(short)
                if not waiting:
                    waiting = needs
                    for n in waiting:
                        self._demand[n.key] += n.amount
                try:
                    await self._fill(short)
                except ControlPlaneUnavailable:
                    self.refused["control_plane_unavailable"] += 1
                    raise unavailable() from None
                needs = [n for n in needs if self._unlimited.get(n.key, 0.0) <= self._clock()]
        finally:
            for n in waiting:
                self._demand[n.key] -= n.amount
                if self._demand[n.key] <= 0:
                    del self._demand[n.key]
        self._refuse_denied([n for n in needs if not self._covers(n, self._wall())])
        # Lost every race for fresh leases to concurrent requests: a plain rate limit.
        self.refused["rate_limit_exceeded"] += 1
        raise GatewayError(429, "rate_limit_exceeded", "Too many concurrent requests; retry", retry_after=1)

    def _refuse_denied(self, needs: Iterable[Need]) -> None:
        now = self._clock()
        for need in needs:
            denial = self._denied.get(need.key)
            if denial is None:
                continue
            if denial.until <= now:
                del self._denied[need.key]
                continue
            err = refusal(need, denial, self._wall())
            self.refused[err.code] += 1
            raise err

    def _covers(self, need: Need, wall: float) -> bool:
        pool = self._pools.get(need.key)
        return pool is not None and pool.current(wall) and pool.available >= need.amount

    def _take(self, needs: list[Need], wall: float) -> Admission:
        debits: list[Debit] = []
        pools: list[Pool] = []
        now = self._clock()
        for need in needs:
            pool = self._pools[need.key]
            pool.available -= need.amount
            pool.last_used = now
            self._rate(need.key).spent += need.amount
            debits.append(Debit(need.org_id, need.key_id, need.metric, pool.window, need.amount))
            pools.append(pool)
            if (
                pool.available < self._low_water(need, pool)
                and need.key not in self._flights
                and need.key not in self._denied
                # Nothing left to grant at the last ask: prefetching would only cost calls.
                and pool.remaining * scale(need.metric) >= need.amount
            ):
                self._launch([need], blocking=False)  # prefetch: registered now, so it runs once
        self.admitted += 1
        if not self._link.connected:
            self.degraded_admissions += 1
        return Admission(self, debits, pools, wall)

    def _low_water(self, need: Need, pool: Pool) -> int:
        return max(need.amount, self._want(need, pool.window_seconds) // 2)

    def _rate(self, key: PoolKey) -> _Rate:
        rate = self._rates.get(key)
        if rate is None:
            rate = self._rates[key] = _Rate(since=self._clock())
        return rate

    def _want(self, need: Need, window_seconds: float) -> int:
        rate = self._rate(need.key)
        horizon = self._settings.lease_seconds
        if window_seconds > 0:
            horizon = min(horizon, window_seconds / 10)
        if rate.per_second <= 0:
            return need.amount * INITIAL_WANT_MULTIPLE
        return max(need.amount, math.ceil(rate.per_second * horizon))

    # -- getting leases --------------------------------------------------------------

    async def _fill(self, needs: list[Need]) -> None:
        """Ask for what ``needs`` lack; join flights already under way for the same limits."""
        waits: dict[int, asyncio.Future[None]] = {}
        for n in needs:
            flight = self._flights.get(n.key)
            if flight is not None:
                waits[id(flight)] = flight
        fresh = [n for n in needs if n.key not in self._flights]
        if fresh:
            flight = self._launch(fresh, blocking=True)
            waits[id(flight)] = flight
        for flight in waits.values():
            await asyncio.shield(flight)

    def _launch(self, needs: list[Need], *, blocking: bool) -> asyncio.Future[None]:
        """Start one AcquireLeases call for ``needs``, registered before this returns (single flight).

        A failed prefetch (not ``blocking``) resolves quietly: requests still short ask again.
        """
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for n in needs:
            self._flights[n.key] = flight

        async def run() -> None:
            try:
                await self._ask(needs, prefetch=not blocking)
                flight.set_result(None)
            except ControlPlaneUnavailable as exc:
                if blocking:
                    flight.set_exception(exc)
                    flight.exception()  # retrieved: waiters re-raise it, nobody else must
                else:
                    flight.set_result(None)
            finally:
                if not flight.done():
                    flight.set_result(None)  # cancelled or failed otherwise: waiters look again
                for n in needs:
                    if self._flights.get(n.key) is flight:
                        del self._flights[n.key]

        self._spawn(run())
        return flight

    async def _ask(self, needs: list[Need], *, prefetch: bool = False) -> None:
        wall, now = self._wall(), self._clock()
        asks: list[node_pb2.LeaseAsk] = []
        for n in needs:
            pool = self._pools.get(n.key)
            have = pool.available if pool is not None and pool.current(wall) else 0
            rate = self._rate(n.key)
            elapsed = now - rate.since
            if elapsed >= 0.05:
                sample = rate.spent / elapsed
                rate.per_second = sample if rate.per_second <= 0 else 0.5 * (rate.per_second + sample)
                rate.spent, rate.since = 0, now
            need = to_cp_up(n.metric, max(0, n.amount - have))
            window_seconds = pool.window_seconds if pool is not None else 0.0
            burst = to_cp_up(n.metric, max(0, self._demand[n.key] - have))
            want = max(need, burst, to_cp_up(n.metric, self._want(n, window_seconds)))
            asks.append(
                node_pb2.LeaseAsk(
                    org_id=n.org_id,
                    key_id=n.key_id,
                    metric=n.metric,  # type: ignore[arg-type]
                    want=want,
                    # A prefetch needs nothing: its refusal is no sign the limit is used up.
                    need=0 if prefetch else max(need, 1),
                )
            )
        returns, self._pending = self._pending, []
        try:
            grants = await self._source.acquire_leases(asks, returns)
        except ControlPlaneUnavailable:
            self._pending = returns + self._pending
            raise
        for n, g in zip(needs, grants, strict=True):
            self._apply(n, g)

    def _apply(self, need: Need, grant: node_pb2.LeaseGrant) -> None:
        key, now, wall = need.key, self._clock(), self._wall()
        if grant.unlimited:
            self._unlimited[key] = now + UNLIMITED_SECONDS
            self._denied.pop(key, None)
            return
        end = grant_window_end(grant)
        if grant.amount <= 0:
            if need.metric in PER_MINUTE and end is not None:
                until = now + max(0.0, end - wall)
            else:
                until = now + self._settings.recheck_seconds
            self._denied[key] = Denial(until=until, window_end=end)
            if need.metric in PER_MINUTE and key in self._pools:
                self._pools[key].remaining = grant.remaining
            return
        self._denied.pop(key, None)
        pool = self._pools.get(key)
        if pool is None or pool.window != grant.window:
            if pool is not None and pool.metric in RETURNABLE:
                self._pending.extend(pool.return_all())
            pool = Pool(need.org_id, need.key_id, need.metric, grant.window, end, grant.window_seconds)
            self._pools[key] = pool
        pool.add(grant)

    # -- settlement -------------------------------------------------------------------

    def correct(self, debit: Debit, delta: int) -> None:
        """Charge ``delta`` more (or, negative, less) than reserved to the debit's window."""
        if not delta:
            return
        pool = self._pools.get((debit.key_id or debit.org_id, debit.metric))
        if pool is not None and pool.window == debit.window:
            pool.available -= delta
        elif debit.metric in RETURNABLE:
            fix = adjustment(debit.org_id, debit.key_id, debit.metric, debit.window, delta)
            if fix is not None:
                self._pending.append(fix)
        # Per-minute windows that already ended: nothing left to correct.

    # -- events from the watch stream ------------------------------------------------------

    def exhausted(self, org_id: str, key_id: str) -> None:
        """A monthly/lifetime limit of this scope ran out somewhere: give back what we hold of it."""
        scope = key_id or org_id
        for key in [k for k in self._pools if k[0] == scope and k[1] in RETURNABLE]:
            self._pending.extend(self._pools.pop(key).return_all())
        # Delivered with the next ask (so what comes back is grantable to it) or by housekeeping.

    def changed(self, org_id: str, key_id: str) -> None:
        """The scope's limits may have changed: forget refusals and 'unlimited' answers."""
        scope = key_id or org_id
        for table in (self._denied, self._unlimited):
            for key in [k for k in table if k[0] == scope]:
                del table[key]

    def flushed(self) -> None:
        """Reconnected or reset: every cached refusal and 'unlimited' answer may be stale."""
        self._denied.clear()
        self._unlimited.clear()

    # -- background -----------------------------------------------------------------------

    async def run(self) -> None:
        """Housekeeping forever (cancel to stop): window ends, idle returns, renewals, corrections."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                self._housekeep()
                if self._pending and self._link.connected:
                    await self._send_returns()
            except ControlPlaneUnavailable:
                pass
            except Exception:
                log.exception("limits housekeeping failed")

    def _housekeep(self) -> None:
        wall, now = self._wall(), self._clock()
        for key, pool in list(self._pools.items()):
            if not pool.current(wall):
                del self._pools[key]
                if pool.metric in RETURNABLE:
                    self._pending.extend(pool.return_all())
            elif pool.metric in RETURNABLE and self._link.connected:
                if now - pool.last_used > self._settings.idle_return_seconds:
                    del self._pools[key]
                    self._pending.extend(pool.return_all())
                    continue
                for lease in list(pool.leases):
                    if wall >= lease.expire_at - (lease.expire_at - lease.issued_at) / 2:
                        self._pending.append(pool.return_lease(lease))

    async def _send_returns(self) -> None:
        returns, self._pending = self._pending, []
        if not returns:
            return
        try:
            await self._source.acquire_leases([], returns)
        except ControlPlaneUnavailable:
            self._pending = returns + self._pending
            raise

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, ControlPlaneUnavailable):
                log.warning("limits background call failed: %s", type(exc).__name__)

    async def close(self, timeout: float = 2.0) -> None:
        """Give back every returnable lease (best effort) and stop background calls."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for key in [k for k in self._pools if k[1] in RETURNABLE]:
            self._pending.extend(self._pools.pop(key).return_all())
        if self._pending:
            with contextlib.suppress(ControlPlaneUnavailable, TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._send_returns()

    def status(self) -> dict[str, Any]:
        """Counters and held leases for the /readyz status object."""
        return {
            "enabled": True,
            "admitted": self.admitted,
            "degraded_admissions": self.degraded_admissions,
            "refused": dict(self.refused),
            "pending_returns": len(self._pending),
            "pools": [
                {
                    "scope": pool.key_id or pool.org_id,
                    "metric": node_pb2.LimitMetric.Name(pool.metric),  # type: ignore[arg-type]
                    "window": pool.window,
                    "available": pool.available // scale(pool.metric),
                    "leases": len(pool.leases),
                    "money": pool.metric in MONEY,
                }
                for pool in self._pools.values()
            ],
        }
