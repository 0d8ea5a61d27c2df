"""Limit metrics and their time windows.

Per-minute metrics count in windows of ``minute_seconds`` (60 in production;
tests shrink it), aligned on the Unix epoch. Monthly metrics count in calendar
months in UTC, numbered ``year * 12 + month - 1``. The key budget has a single
window (0) over the key's whole life.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from odock.limitmetrics import (
    BUDGET,
    MONTHLY,
    MONTHLY_SPEND,
    MONTHLY_TOKENS,
    PER_MINUTE,
    REQUESTS_PER_MINUTE,
    TOKENS_PER_MINUTE,
)

ORG_METRICS = frozenset({REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE, MONTHLY_TOKENS, MONTHLY_SPEND})
KEY_METRICS = frozenset({REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE, BUDGET})


@dataclass(frozen=True, slots=True)
class Window:
    """One counting window of a metric."""

    index: int
    start: datetime | None  # None: since forever (key budget)
    end: datetime | None  # None: never ends (key budget)

    @property
    def seconds(self) -> float:
        """Length in seconds (0 for the unbounded budget window)."""
        if self.start is None or self.end is None:
            return 0.0
        return (self.end - self.start).total_seconds()


def month_index(when: datetime) -> int:
    """The calendar month (UTC) of ``when`` as ``year * 12 + month - 1``."""
    when = when.astimezone(UTC)
    return when.year * 12 + when.month - 1


def month_start(index: int) -> datetime:
    """Midnight UTC on the first day of month ``index``."""
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def window_for(metric: int, now: datetime, minute_seconds: float) -> Window:
    """The window of ``metric`` that contains ``now``."""
    if metric in PER_MINUTE:
        index = int(now.timestamp() // minute_seconds)
        start = datetime.fromtimestamp(index * minute_seconds, UTC)
        end = datetime.fromtimestamp((index + 1) * minute_seconds, UTC)
        return Window(index, start, end)
    if metric in MONTHLY:
        index = month_index(now)
        return Window(index, month_start(index), month_start(index + 1))
    return Window(0, None, None)
