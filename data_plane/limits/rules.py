"""The errors for a limit that is used up or cannot be checked, and remembered refusals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from data_plane.errors import GatewayError
from odock.limitmetrics import MONTHLY_SPEND, MONTHLY_TOKENS, PER_MINUTE, REQUESTS_PER_MINUTE

RETRY_AFTER_UNAVAILABLE = 5


@dataclass(slots=True)
class Denial:
    """A refused window, remembered until ``until`` (monotonic)."""

    until: float
    window_end: float | None  # unix


def refusal(metric: int, key_scoped: bool, denial: Denial | None, now: float) -> GatewayError:
    """The 429 for a limit that is used up (``key_scoped``: the API key's own limit, else the org's)."""
    who = "API key" if key_scoped else "organization"
    if metric in PER_MINUTE:
        unit = "requests" if metric == REQUESTS_PER_MINUTE else "tokens"
        wait = 1
        if denial is not None and denial.window_end is not None:
            wait = max(1, math.ceil(denial.window_end - now))
        return GatewayError(
            429,
            "rate_limit_exceeded",
            f"Rate limit reached: the {who}'s {unit} per minute are used up; retry after {wait}s",
            retry_after=wait,
        )
    if metric == MONTHLY_TOKENS:
        return GatewayError(429, "quota_exceeded", "The organization's monthly token quota is used up")
    if metric == MONTHLY_SPEND:
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
