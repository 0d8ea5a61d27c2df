"""Which limits a request must reserve from, and the errors for a limit that is used up."""

from __future__ import annotations

import math
from dataclasses import dataclass

from data_plane.errors import GatewayError
from data_plane.governance.types import KeyGrant
from data_plane.limits.estimate import Estimate
from data_plane.limits.pools import (
    BUDGET,
    MONTHLY_SPEND,
    MONTHLY_TOKENS,
    PER_MINUTE,
    REQUESTS_PER_MINUTE,
    TOKENS_PER_MINUTE,
    Need,
)

RETRY_AFTER_UNAVAILABLE = 5


@dataclass(slots=True)
class Denial:
    """A refused window, remembered until ``until`` (monotonic)."""

    until: float
    window_end: float | None  # unix


def needs_for(grant: KeyGrant, est: Estimate) -> list[Need]:
    """Every limit this request must reserve from (zero-cost requests skip the money limits)."""
    lim, org, key = grant.limits, grant.org_id, grant.key_id
    out: list[Need] = []
    for scope_key, value, metric, amount in (
        ("", lim.org_requests_per_minute, REQUESTS_PER_MINUTE, 1),
        (key, lim.key_requests_per_minute, REQUESTS_PER_MINUTE, 1),
        ("", lim.org_tokens_per_minute, TOKENS_PER_MINUTE, est.tokens),
        (key, lim.key_tokens_per_minute, TOKENS_PER_MINUTE, est.tokens),
        ("", lim.org_monthly_token_quota, MONTHLY_TOKENS, est.tokens),
        ("", lim.org_monthly_spend_cap_micros, MONTHLY_SPEND, est.picos),
        (key, lim.key_budget_micros, BUDGET, est.picos),
    ):
        if value is not None and amount > 0:
            out.append(Need(org, scope_key, metric, amount))
    return out


def refusal(need: Need, denial: Denial | None, now: float) -> GatewayError:
    """The 429 for a limit that is used up."""
    who = "API key" if need.key_id else "organization"
    if need.metric in PER_MINUTE:
        unit = "requests" if need.metric == REQUESTS_PER_MINUTE else "tokens"
        wait = 1
        if denial is not None and denial.window_end is not None:
            wait = max(1, math.ceil(denial.window_end - now))
        return GatewayError(
            429,
            "rate_limit_exceeded",
            f"Rate limit reached: the {who}'s {unit} per minute are used up; retry after {wait}s",
            retry_after=wait,
        )
    if need.metric == MONTHLY_TOKENS:
        return GatewayError(429, "quota_exceeded", "The organization's monthly token quota is used up")
    if need.metric == MONTHLY_SPEND:
        return GatewayError(429, "budget_exceeded", "The organization's monthly spend cap is reached")
    return GatewayError(429, "budget_exceeded", "The API key's budget is used up")


def unavailable() -> GatewayError:
    """The 503 when more allowance is needed and the control plane cannot grant it."""
    return GatewayError(
        503,
        "control_plane_unavailable",
        "Gateway cannot check usage limits right now (control plane unreachable); retry shortly",
        retry_after=RETRY_AFTER_UNAVAILABLE,
    )
