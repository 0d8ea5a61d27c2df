"""Usage that happened without an admission, charged to the limits after the fact: a batch's.

A batch runs at the provider for up to a day; the gateway learns its usage once, when it first
sees the batch finished (``data_plane/objects/batch_usage.py``). That usage was incurred: it is
never refused, only counted, like a request whose usage exceeded its reservation:

- the long windows count it: the org's monthly token quota and spend cap, the key's budget. Where
  this node holds a live pool of the window, the pool goes down by it (negative if need be: the
  next grant pays the deficit first, and the next request is refused once nothing is left); where
  it holds none, the control plane's counter is corrected (an adjustment sent with the next lease
  call, as for a settlement that arrives after its lease went back);
- the per-minute rates do not: the work was spread over the batch's window, not this minute
  (OpenAI, too, keeps batch traffic out of the per-minute rate limits). Creating the batch was a
  request, admitted and counted like any other.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from data_plane.limits.lanes import MONEY_KIND, TOKENS
from data_plane.limits.limiter import Limiter
from odock.limitmetrics import BUDGET, MONTHLY, MONTHLY_SPEND, MONTHLY_TOKENS

# (metric, whose scope: the org's or the key's, what it counts)
_CHARGED = ((MONTHLY_TOKENS, "org", TOKENS), (MONTHLY_SPEND, "org", MONEY_KIND), (BUDGET, "key", MONEY_KIND))


def month_index(wall: float) -> int:
    """The calendar month (UTC) of unix time ``wall``, numbered as the control plane numbers windows."""
    when = datetime.fromtimestamp(wall, UTC)
    return when.year * 12 + when.month - 1


def charge(limiter: Limiter, org_id: str, key_id: str, tokens: int, picos: int, wall: float | None = None) -> None:
    """Count ``tokens`` and ``picos`` (pico-USD) against the org's and key's long-window limits."""
    if wall is None:
        wall = time.time()
    for metric, scope, kind in _CHARGED:
        amount = tokens if kind == TOKENS else picos
        if amount > 0:
            window = month_index(wall) if metric in MONTHLY else 0
            limiter.charge(org_id, key_id if scope == "key" else "", metric, window, amount, wall)
