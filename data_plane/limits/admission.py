"""One admitted request's reservations, its settlement, and the limit headers it answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from data_plane.limits.pools import (
    BUDGET,
    MONEY,
    MONTHLY_SPEND,
    MONTHLY_TOKENS,
    REQUESTS_PER_MINUTE,
    TOKENS,
    TOKENS_PER_MINUTE,
    Pool,
    scale,
)

if TYPE_CHECKING:
    from data_plane.limits.limiter import Limiter

PICOS_PER_USD = 10**12


@dataclass(frozen=True, slots=True)
class Debit:
    """What was reserved from one limit window."""

    org_id: str
    key_id: str
    metric: int
    window: int
    amount: int  # node units


def _reset(pool: Pool, now: float) -> str | None:
    if pool.window_end is None:
        return None
    return f"{max(0.0, pool.window_end - now):.3f}s"


class Admission:
    """A request let through: settle it once with the actual usage; its headers say what is left."""

    def __init__(self, limiter: Limiter, debits: list[Debit], pools: list[Pool], now: float) -> None:
        self._limiter = limiter
        self._debits = debits
        self.settled = False
        self.headers = self._headers(pools, now)

    def settle(self, tokens: int, picos: int) -> None:
        """Correct every reservation to the actual tokens and cost (once; later calls do nothing)."""
        if self.settled:
            return
        self.settled = True
        for debit in self._debits:
            if debit.metric in TOKENS:
                self._limiter.correct(debit, tokens - debit.amount)
            elif debit.metric in MONEY:
                self._limiter.correct(debit, picos - debit.amount)

    @staticmethod
    def _headers(pools: list[Pool], now: float) -> dict[str, str]:
        # The tightest limit of each kind (org or key) is the one a client must respect.
        tightest: dict[int, Pool] = {}
        for pool in pools:
            kind = BUDGET if pool.metric == MONTHLY_SPEND else pool.metric
            best = tightest.get(kind)
            if best is None or pool.estimate_remaining() < best.estimate_remaining():
                tightest[kind] = pool
        out: dict[str, str] = {}
        for metric, unit in ((REQUESTS_PER_MINUTE, "requests"), (TOKENS_PER_MINUTE, "tokens")):
            found = tightest.get(metric)
            if found is None:
                continue
            out[f"x-ratelimit-limit-{unit}"] = str(found.limit)
            out[f"x-ratelimit-remaining-{unit}"] = str(found.estimate_remaining())
            reset = _reset(found, now)
            if reset is not None:
                out[f"x-ratelimit-reset-{unit}"] = reset
        quota = tightest.get(MONTHLY_TOKENS)
        if quota is not None:
            out["x-odock-quota-limit-tokens"] = str(quota.limit)
            out["x-odock-quota-remaining-tokens"] = str(quota.estimate_remaining())
        money = tightest.get(BUDGET)
        if money is not None:
            picos = money.estimate_remaining()
            out["x-odock-budget-limit-usd"] = f"{money.limit * scale(money.metric) / PICOS_PER_USD:.6f}"
            out["x-odock-budget-remaining-usd"] = f"{picos / PICOS_PER_USD:.6f}"
        return out


ADMISSION: web.RequestKey[Admission] = web.RequestKey("odock_limits_admission", Admission)


async def stamp_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: the admitted request's limit headers on its response."""
    admission = request.get(ADMISSION)
    if admission is not None:
        for name, value in admission.headers.items():
            response.headers[name] = value
