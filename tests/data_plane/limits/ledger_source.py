"""An in-memory stand-in for ``NodeService.AcquireLeases`` at the limiter's seam (``LeaseSource``).

It grants like ``control_plane.store.repositories.ledger.grant`` (between ``need`` and ``want``, at most
``fraction`` of what is left unless that is less than ``need``, never beyond the limit) and can be
held (``gate``), slowed (``delay``), broken (``fail``) or raced (``on_answer``) to drive the limiter's queue in unit tests.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable

from data_plane.governance.domain import ControlPlaneUnavailable
from odock.v1 import node_pb2

PER_MINUTE = (node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE, node_pb2.LIMIT_METRIC_TOKENS_PER_MINUTE)


class LedgerSource:
    """Grants against ``limit`` per (scope, metric); records every call."""

    def __init__(self, limit: int, *, fraction: float = 0.25, delay: float = 0.0) -> None:
        self.limit = limit
        self.fraction = fraction
        self.delay = delay
        self.granted: Counter[tuple[str, int]] = Counter()
        self.calls: list[list[node_pb2.LeaseAsk]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.flying: Counter[tuple[str, int]] = Counter()
        self.max_per_limit = 0  # most calls in flight at once asking for the same limit
        self.gate: asyncio.Event | None = None  # set: calls wait until it is set
        self.fail = False
        # Called with the grants just before they are answered (e.g. to start competing requests).
        self.on_answer: Callable[[list[node_pb2.LeaseGrant]], None] | None = None

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]:
        """Grant each ask (see the module docstring)."""
        self.calls.append(list(asks))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        keys = [(ask.key_id or ask.org_id, int(ask.metric)) for ask in asks]
        self.flying.update(keys)
        self.max_per_limit = max([self.max_per_limit, *(self.flying[k] for k in keys)])
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
            else:
                await asyncio.sleep(0)
            if self.fail:
                raise ControlPlaneUnavailable("AcquireLeases: UNAVAILABLE")
            grants = [self._grant(ask) for ask in asks]
            if self.on_answer is not None:
                self.on_answer(grants)
            return grants
        finally:
            self.in_flight -= 1
            self.flying.subtract(keys)

    def _grant(self, ask: node_pb2.LeaseAsk) -> node_pb2.LeaseGrant:
        key = (ask.key_id or ask.org_id, int(ask.metric))
        remaining = self.limit - self.granted[key]
        amount = 0
        if remaining >= max(ask.need, 1):
            cap = max(ask.need, math.ceil(remaining * self.fraction))
            amount = min(max(ask.want, ask.need), cap, remaining)
        self.granted[key] += amount
        now = int(time.time())
        grant = node_pb2.LeaseGrant(amount=amount, limit=self.limit, remaining=remaining - amount, window=1)
        if ask.metric in PER_MINUTE:
            grant.window_seconds = 3600
            grant.window_end.FromSeconds(now + 3600)
        elif amount:
            grant.lease_id = f"lse_{len(self.calls)}_{int(ask.metric)}"
            grant.expire_time.FromSeconds(now + 3600)
        return grant
