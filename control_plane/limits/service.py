"""NodeService.AcquireLeases: hand data-plane nodes slices of the remaining allowance.

One transaction per call: returns are settled first (so their unused amounts
are grantable again), then each ask is granted from its window's counter.
The limit values always come from the database (the org's tier merged with
its overrides, the key's own limits), never from the node. When a monthly or
lifetime window runs dry, an ``INVALIDATION_KIND_LIMIT`` change is logged in
the same transaction, so every node hears "exhausted" on its watch stream
(from any replica) and stops spending the leases it holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane import convert, tiers
from control_plane.changefeed import ChangeFeed
from control_plane.errors import InvalidArgument
from control_plane.ids import new_id
from control_plane.limits.windows import KEY_METRICS, ORG_METRICS, window_for
from control_plane.store import changes
from control_plane.store.repositories import keys, ledger, orgs
from control_plane.store.tables import VirtualKeyRow
from odock.limitmetrics import (
    BUDGET,
    MONTHLY_SPEND,
    MONTHLY_TOKENS,
    REQUESTS_PER_MINUTE,
    RETURNABLE,
    TOKENS_PER_MINUTE,
)
from odock.v1 import node_pb2

log = logging.getLogger("odock.control_plane.limits")

LEASE_PREFIX = "lse"
MAX_ASKS = 64
MAX_RETURNS = 1024
# Housekeeping (reclaiming expired leases, pruning old windows) at most this often.
MAINTENANCE_SECONDS = 5.0
COUNTER_RETENTION = timedelta(days=1)

_ORG_FIELDS: dict[int, str] = {
    REQUESTS_PER_MINUTE: "requests_per_minute",
    TOKENS_PER_MINUTE: "tokens_per_minute",
    MONTHLY_TOKENS: "monthly_token_quota",
    MONTHLY_SPEND: "monthly_spend_cap_micros",
}
_KEY_FIELDS: dict[int, str] = {
    REQUESTS_PER_MINUTE: "requests_per_minute",
    TOKENS_PER_MINUTE: "tokens_per_minute",
    BUDGET: "budget_micros",
}


class LeaseSettings(Protocol):
    """What the lease service needs from the control plane's settings."""

    @property
    def limit_minute_seconds(self) -> float: ...

    @property
    def lease_ttl_seconds(self) -> float: ...

    @property
    def lease_fraction(self) -> float: ...


@dataclass(frozen=True, slots=True)
class _Scope:
    org_id: str
    key_id: str


class _Limits:
    """Limit values for the scopes of one call, each row read once."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._orgs: dict[str, tiers.LimitSet | None] = {}
        self._keys: dict[str, VirtualKeyRow | None] = {}

    async def org(self, org_id: str) -> tiers.LimitSet | None:
        if org_id not in self._orgs:
            row = await orgs.get(self._session, org_id)
            self._orgs[org_id] = (
                None if row is None else tiers.effective_limits(row.tier, convert.org_overrides(row))
            )
        return self._orgs[org_id]

    async def key(self, key_id: str) -> VirtualKeyRow | None:
        if key_id not in self._keys:
            self._keys[key_id] = await keys.get(self._session, key_id)
        return self._keys[key_id]

    async def limit(self, scope: _Scope, metric: int) -> tuple[bool, int | None]:
        """(scope exists, limit or None for no limit)."""
        if scope.key_id:
            key = await self.key(scope.key_id)
            if key is None or key.org_id != scope.org_id:
                return False, None
            value = getattr(key, _KEY_FIELDS[metric])
            return True, None if value is None else int(value)
        limits = await self.org(scope.org_id)
        if limits is None:
            return False, None
        value = getattr(limits, _ORG_FIELDS[metric])
        return True, None if value is None else int(value)


def _validate(request: node_pb2.AcquireLeasesRequest) -> None:
    if len(request.asks) > MAX_ASKS:
        raise InvalidArgument("asks", f"at most {MAX_ASKS} per call")
    if len(request.returns) > MAX_RETURNS:
        raise InvalidArgument("returns", f"at most {MAX_RETURNS} per call")
    for i, ask in enumerate(request.asks):
        allowed = KEY_METRICS if ask.key_id else ORG_METRICS
        if ask.metric not in allowed:
            raise InvalidArgument(f"asks[{i}].metric", "not a limit of this scope")
        if not ask.org_id:
            raise InvalidArgument(f"asks[{i}].org_id", "required")
        if ask.want < 0 or ask.need < 0:
            raise InvalidArgument(f"asks[{i}]", "want and need must be >= 0")
    for i, ret in enumerate(request.returns):
        if not ret.lease_id and not (ret.org_id and ret.metric in RETURNABLE):
            raise InvalidArgument(f"returns[{i}]", "a lease_id, or org_id and a monthly/budget metric")


class LeaseService:
    """Grants and settles limit leases against the database."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], settings: LeaseSettings, feed: ChangeFeed
    ) -> None:
        self._sessionmaker = sessionmaker
        self._minute = float(settings.limit_minute_seconds)
        self._ttl = timedelta(seconds=float(settings.lease_ttl_seconds))
        self._fraction = float(settings.lease_fraction)
        self._feed = feed
        self._next_maintenance = 0.0

    async def acquire(self, request: node_pb2.AcquireLeasesRequest) -> node_pb2.AcquireLeasesResponse:
        """Settle the returns, then grant each ask (see the module docstring)."""
        _validate(request)
        now = datetime.now(UTC)
        announced = False
        async with self._sessionmaker() as session, session.begin():
            await self._returns(session, request.returns, now)
            limits = _Limits(session)
            grants: list[node_pb2.LeaseGrant] = [node_pb2.LeaseGrant()] * len(request.asks)
            # One order for every caller: concurrent calls lock counter rows alike (no deadlock).
            order = sorted(
                range(len(request.asks)),
                key=lambda i: (request.asks[i].key_id or request.asks[i].org_id, request.asks[i].metric),
            )
            for i in order:
                ask = request.asks[i]
                grant, exhausted = await self._grant(session, limits, request.node_id, ask, now)
                grants[i] = grant
                if exhausted:
                    await changes.record_change(
                        session, node_pb2.INVALIDATION_KIND_LIMIT, ask.org_id, key_id=ask.key_id or None
                    )
                    announced = True
        if announced:
            self._feed.poke()
        await self._maintain(now)
        return node_pb2.AcquireLeasesResponse(grants=grants)

    async def _returns(
        self, session: AsyncSession, returns: Sequence[node_pb2.LeaseReturn], now: datetime
    ) -> None:
        for ret in returns:
            if ret.lease_id:
                await ledger.settle_lease(session, ret.lease_id, ret.used)
            elif ret.used:
                scope_id = ret.key_id or ret.org_id
                await ledger.adjust(session, scope_id, int(ret.metric), ret.window, ret.used)

    async def _grant(
        self, session: AsyncSession, limits: _Limits, node_id: str, ask: node_pb2.LeaseAsk, now: datetime
    ) -> tuple[node_pb2.LeaseGrant, bool]:
        metric = int(ask.metric)
        scope = _Scope(ask.org_id, ask.key_id)
        window = window_for(metric, now, self._minute)
        out = node_pb2.LeaseGrant(window=window.index, window_seconds=window.seconds)
        if window.end is not None:
            out.window_end.CopyFrom(convert.timestamp(window.end))
        exists, limit = await limits.limit(scope, metric)
        if not exists:
            return out, False  # deleted org or key: nothing to grant
        if limit is None:
            out.unlimited = True
            out.amount = ask.want
            return out, False
        scope_id = scope.key_id or scope.org_id
        await ledger.ensure_counter(session, scope.org_id, scope_id, metric, window)
        amount, counter = await ledger.grant(
            session, scope_id, metric, window.index, limit, ask.want, ask.need, self._fraction
        )
        out.limit = limit
        out.amount = amount
        out.remaining = max(0, counter.remaining(limit))
        if amount > 0 and metric in RETURNABLE:
            out.lease_id = new_id(LEASE_PREFIX)
            expire = now + self._ttl
            await ledger.add_lease(
                session, out.lease_id, node_id, scope_id, metric, window.index, amount, expire
            )
            out.expire_time.CopyFrom(convert.timestamp(expire))
        elif window.end is not None:
            out.expire_time.CopyFrom(convert.timestamp(window.end))
        exhausted = False
        if amount == 0 and metric in RETURNABLE and ask.need > 0:  # a refused prefetch says nothing
            exhausted = await ledger.mark_exhausted(session, scope_id, metric, window.index)
        return out, exhausted

    async def _maintain(self, now: datetime) -> None:
        if time.monotonic() < self._next_maintenance:
            return
        self._next_maintenance = time.monotonic() + MAINTENANCE_SECONDS
        try:
            async with self._sessionmaker() as session, session.begin():
                reclaimed = await ledger.reclaim_expired(session, now)
                await ledger.prune(session, now - COUNTER_RETENTION)
            if reclaimed:
                log.info("limits: %d expired leases counted as spent", reclaimed)
        except Exception as exc:  # noqa: BLE001 - housekeeping must never fail a grant
            log.warning("limits: housekeeping failed (%s)", type(exc).__name__)
