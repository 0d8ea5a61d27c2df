"""This node's share of each limit window: the leases it holds and what is left of them.

Amounts are kept in *node units*: tokens and requests as they are, money in
pico-USD (the control plane counts micro-USD), so many cheap requests do not
each round a micro-USD up. ``available`` may go negative when a request's
actual usage exceeded its reservation; the next grant pays that off first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from odock.limitmetrics import MONEY
from odock.v1 import node_pb2

PICOS_PER_MICRO = 1_000_000
PICOS_PER_USD = 10**12

PoolKey = tuple[str, int]  # (scope id: an org id or a key id, metric)


def scale(metric: int) -> int:
    """Node units per control-plane unit."""
    return PICOS_PER_MICRO if metric in MONEY else 1


def to_cp_up(metric: int, amount: int) -> int:
    """Node units to control-plane units, rounded up (asking, or reporting spend)."""
    return -((-amount) // scale(metric))


def to_cp_toward_zero(metric: int, amount: int) -> int:
    """Node units to control-plane units, rounded toward zero (a credit never grows)."""
    units = abs(amount) // scale(metric)
    return units if amount >= 0 else -units


@dataclass(slots=True)
class Lease:
    """One returnable lease inside a pool."""

    lease_id: str
    amount: int  # node units
    expire_at: float  # unix seconds
    issued_at: float  # unix seconds


@dataclass(slots=True)
class Pool:
    """The leases this node holds for one (scope, metric, window).

    ``live`` turns False when the pool is retired (window over, returned, replaced): a settlement
    that arrives later goes to the control plane as an adjustment instead.
    """

    org_id: str
    key_id: str
    metric: int
    window: int
    window_end: float | None  # unix seconds; None: never ends
    window_seconds: float
    limit: int = 0  # control-plane units
    remaining: int = 0  # control-plane units not granted to anyone at the last grant
    headroom: int = 0  # the same in node units
    amount: int = 0
    available: int = 0
    leases: list[Lease] = field(default_factory=list)
    last_used: float = field(default_factory=time.time)  # unix seconds
    live: bool = True
    limit_text: str = "0"  # the limit as the headers show it (rendered once per grant)

    def current(self, now: float) -> bool:
        """Whether the window is still open at unix time ``now``."""
        return self.window_end is None or now < self.window_end

    def add(self, grant: node_pb2.LeaseGrant) -> None:
        """Take a grant into the pool."""
        amount = grant.amount * scale(self.metric)
        self.amount += amount
        self.available += amount
        if grant.limit != self.limit or self.limit_text == "0":
            self.limit = grant.limit
            self.limit_text = (
                f"{grant.limit * scale(self.metric) / PICOS_PER_USD:.6f}"
                if self.metric in MONEY
                else str(grant.limit)
            )
        self.set_remaining(grant.remaining)
        if grant.lease_id:
            expire = grant.expire_time.seconds + grant.expire_time.nanos / 1e9
            self.leases.append(Lease(grant.lease_id, amount, expire, time.time()))

    def set_remaining(self, remaining: int) -> None:
        """What the control plane had not granted to anyone at its last answer (its units)."""
        self.remaining = remaining
        self.headroom = remaining * scale(self.metric)

    def return_all(self) -> list[node_pb2.LeaseReturn]:
        """Returns for every lease, spreading what was spent over them; empties and retires the pool."""
        self.live = False
        used = self.amount - self.available
        out: list[node_pb2.LeaseReturn] = []
        for i, lease in enumerate(self.leases):
            last = i == len(self.leases) - 1
            part = max(0, used) if last else min(max(0, used), lease.amount)
            used -= part
            out.append(self._return(lease.lease_id, to_cp_up(self.metric, part)))
        if used < 0 or not self.leases:
            # Credits beyond what the leases hold (settled below an earlier reservation).
            delta = to_cp_toward_zero(self.metric, used) if self.leases else to_cp_up(self.metric, used)
            if delta:
                out.append(self._return("", delta))
        self.amount = self.available = 0
        self.leases = []
        return out

    def return_lease(self, lease: Lease) -> node_pb2.LeaseReturn:
        """Return one lease (renewal before expiry): what the other leases cannot cover counts as spent."""
        rest = self.amount - lease.amount
        kept = min(self.available, rest)
        used = lease.amount - (self.available - kept)
        self.leases.remove(lease)
        self.amount, self.available = rest, kept
        return self._return(lease.lease_id, to_cp_up(self.metric, used))

    def status(self) -> dict[str, object]:
        """The pool as the /readyz status object lists it."""
        return {
            "scope": self.key_id or self.org_id,
            "metric": node_pb2.LimitMetric.Name(self.metric),  # type: ignore[arg-type]
            "window": self.window,
            "available": self.available // scale(self.metric),
            "leases": len(self.leases),
            "money": self.metric in MONEY,
        }

    def _return(self, lease_id: str, used: int) -> node_pb2.LeaseReturn:
        return node_pb2.LeaseReturn(
            lease_id=lease_id,
            used=used,
            org_id=self.org_id,
            key_id=self.key_id,
            metric=self.metric,  # type: ignore[arg-type]
            window=self.window,
        )


def adjustment(org_id: str, key_id: str, metric: int, window: int, delta: int) -> node_pb2.LeaseReturn | None:
    """A correction for a window whose lease already went back (None when it rounds to nothing)."""
    units = to_cp_up(metric, delta) if delta > 0 else to_cp_toward_zero(metric, delta)
    if not units:
        return None
    return node_pb2.LeaseReturn(
        org_id=org_id,
        key_id=key_id,
        metric=metric,  # type: ignore[arg-type]
        window=window,
        used=units,
    )


def grant_window_end(grant: node_pb2.LeaseGrant) -> float | None:
    """The grant's window end in unix seconds (None: never)."""
    if not grant.HasField("window_end"):
        return None
    return grant.window_end.seconds + grant.window_end.nanos / 1e9
