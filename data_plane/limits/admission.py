"""One admitted request's reservations, its settlement, and the limit headers it answers with."""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Protocol

from data_plane.limits.lanes import MONEY_KIND, REQUESTS, Lane, Plan
from data_plane.limits.pools import PICOS_PER_USD, Pool

__all__ = ["Admission", "Corrector"]


class Corrector(Protocol):
    """What settles the rarer cases (the ``Limiter``)."""

    def correct(self, lane: Lane, pool: Pool, delta: int) -> None:
        """Charge ``delta`` more (or, negative, less) than reserved to the pool it was taken from."""
        ...


def _tightest(pools: list[Pool | None], group: tuple[int, ...]) -> tuple[Pool, int] | None:
    # The tightest limit of each kind (org or key) is the one a client must respect.
    best: Pool | None = None
    best_left = 0
    for i in group:
        pool = pools[i]
        if pool is None:
            continue
        available = pool.available
        left = (available if available > 0 else 0) + pool.headroom  # noqa: FURB136 - no call: per response
        if best is None or left < best_left:
            best, best_left = pool, left
    return None if best is None else (best, best_left)


class Admission:
    """A request let through: settle it once with the actual usage; its headers say what is left.

    The headers are rendered when the response is prepared (once), from the pools the request
    reserved from, so admission itself builds no strings.
    """

    __slots__ = ("_limiter", "_picos", "_plan", "_pools", "_tokens", "settled")

    def __init__(
        self, limiter: Corrector, plan: Plan, pools: list[Pool | None], tokens: int, picos: int
    ) -> None:
        self._limiter = limiter
        self._plan = plan
        self._pools = pools  # aligned with plan.lanes; None: nothing reserved there
        self._tokens = tokens
        self._picos = picos
        self.settled = False

    def settle(self, tokens: int, picos: int) -> None:
        """Correct every reservation to the actual tokens and cost (once; later calls do nothing)."""
        if self.settled:
            return
        self.settled = True
        d_tokens, d_picos = tokens - self._tokens, picos - self._picos
        if not d_tokens and not d_picos:
            return
        for lane, pool in zip(self._plan.lanes, self._pools, strict=True):
            if pool is None or lane.kind == REQUESTS:
                continue
            delta = d_picos if lane.kind == MONEY_KIND else d_tokens
            if delta > 0 and pool.live:
                pool.available -= delta  # the common case, inline: used more than reserved
            elif delta:
                self._limiter.correct(lane, pool, delta)

    def write_headers(self, headers: MutableMapping[str, str], wall: float | None = None) -> None:
        """Set the limit headers (tightest of org and key per kind) in ``headers``."""
        pools = self._pools
        requests, tokens, quota, money = self._plan.groups
        if wall is None:
            wall = time.time()
        found = _tightest(pools, requests) if requests else None
        if found is not None:
            pool, left = found
            headers["x-ratelimit-limit-requests"] = pool.limit_text
            headers["x-ratelimit-remaining-requests"] = str(left)
            if pool.window_end is not None:
                headers["x-ratelimit-reset-requests"] = f"{max(0.0, pool.window_end - wall):.3f}s"
        found = _tightest(pools, tokens) if tokens else None
        if found is not None:
            pool, left = found
            headers["x-ratelimit-limit-tokens"] = pool.limit_text
            headers["x-ratelimit-remaining-tokens"] = str(left)
            if pool.window_end is not None:
                headers["x-ratelimit-reset-tokens"] = f"{max(0.0, pool.window_end - wall):.3f}s"
        found = _tightest(pools, quota) if quota else None
        if found is not None:
            headers["x-odock-quota-limit-tokens"] = found[0].limit_text
            headers["x-odock-quota-remaining-tokens"] = str(found[1])
        found = _tightest(pools, money) if money else None
        if found is not None:
            headers["x-odock-budget-limit-usd"] = found[0].limit_text
            headers["x-odock-budget-remaining-usd"] = f"{found[1] / PICOS_PER_USD:.6f}"
