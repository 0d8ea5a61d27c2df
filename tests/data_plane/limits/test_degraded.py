"""Fail-open while the control plane is away: local limits from the last known state (in-memory).

Before issue 11 a fail-open org was admitted only while its leases lasted, then got 503
``control_plane_unavailable`` (about two seconds of traffic); the end-to-end version of this, with
real planes and a killed control plane, is ``tests/data_plane/limits/test_outage.py``.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from data_plane.errors import GatewayError
from data_plane.governance.domain import GrantLimits, Link
from data_plane.limits import Estimate, Limiter
from data_plane.limits.degraded import MIN_SHARE, month_window
from data_plane.settings import LimitSettings
from odock.v1 import node_pb2
from tests.data_plane.limits.ledger_source import LedgerSource
from tests.data_plane.limits.test_queue import key_grant

ONE = Estimate(tokens=10, picos=0)


class ReturnsSource(LedgerSource):
    """Also keeps every lease return it is sent."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.returns: list[node_pb2.LeaseReturn] = []

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]:
        grants = await super().acquire_leases(asks, returns)
        self.returns.extend(returns)  # only once delivered
        return grants


def limiter(source: LedgerSource, link: Link | None = None, **settings: float) -> Limiter:
    link = link or Link(connected=True, ever_connected=True)
    return Limiter(source, link, LimitSettings(**settings))  # type: ignore[arg-type]


async def admit_until_refused(
    lim: Limiter, grant: object, est: Estimate, most: int = 10_000
) -> tuple[int, GatewayError]:
    """Admit (and settle as estimated) until refused; how many got in, and the refusal."""
    for served in range(most):
        try:
            async with asyncio.timeout(1):  # never waits on a call while away
                adm = await lim.admit(grant, est)  # type: ignore[arg-type]
        except GatewayError as err:
            return served, err
        adm.settle(est.tokens, est.picos)
    raise AssertionError("never refused")


async def test_a_failed_call_puts_a_fail_open_org_on_its_local_share_then_429_not_503(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = LedgerSource(100)
    lim = limiter(source)
    grant = key_grant(GrantLimits(key_requests_per_minute=100))
    for _ in range(5):
        (await lim.admit(grant, ONE)).settle(ONE.tokens, 0)
    assert lim.status()["degraded"] is False
    held = source.granted["key_a", node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE]
    source.fail = True
    with caplog.at_level(logging.WARNING, "odock.data_plane.limits"):
        served, err = await admit_until_refused(lim, grant, ONE)
    # The only node: its share of the window is all of it; what the leases held counts in it.
    assert 5 + served == 100, (served, held)
    assert (err.status, err.code) == (429, "rate_limit_exceeded") and err.retry_after
    status = lim.status()
    assert status["degraded"] is True
    # Counted from the first failed call on (the prefetch that failed): the local ones all are.
    assert served - held <= status["degraded_local"] <= status["degraded_admissions"] <= served
    assert status["refused"] == {"rate_limit_exceeded": 1}
    assert sum("control plane away" in r.message for r in caplog.records) == 1  # once per outage

    source.fail = False
    lim.flushed()  # the watch stream reconnected
    assert lim.status()["degraded"] is False
    await lim.close()


async def test_watch_down_admits_locally_without_calling_and_fail_closed_gets_503() -> None:
    source = LedgerSource(1000)
    source.gate = asyncio.Event()  # a call would hang: nothing may wait on one
    link = Link(connected=False, ever_connected=True)
    lim = limiter(source, link)
    grant = key_grant(GrantLimits(org_requests_per_minute=1000))
    served, err = await admit_until_refused(lim, grant, ONE)
    assert served == int(1000 * MIN_SHARE)  # never granted anything here: the minimum share
    assert err.status == 429
    closed = key_grant(GrantLimits(key_requests_per_minute=1000), "key_b", fail_closed=True)
    task = asyncio.create_task(lim.admit(closed, ONE))
    await asyncio.sleep(0.05)
    assert not task.done()  # fail-closed: waits for the control plane (then 503), never admitted locally
    task.cancel()
    source.gate.set()
    await lim.close()


async def test_a_wait_past_the_deadline_admits_a_fail_open_request_locally() -> None:
    source = LedgerSource(100)
    source.gate = asyncio.Event()  # the control plane never answers
    lim = limiter(source, wait_seconds=0.05)
    grant = key_grant(GrantLimits(key_tokens_per_minute=1000))
    adm = await lim.admit(grant, ONE)
    adm.settle(ONE.tokens, 0)
    assert lim.status()["degraded"] is True and lim.status()["degraded_local"] == 1
    source.gate.set()
    await asyncio.sleep(0.05)  # the late answer ends the outage
    assert lim.status()["degraded"] is False
    await lim.close()


async def test_monthly_quota_away_is_bounded_by_the_last_known_remaining_and_reconciled() -> None:
    source = ReturnsSource(10_000)
    lim = limiter(source)
    grant = key_grant(GrantLimits(org_monthly_token_quota=10_000))
    est = Estimate(tokens=100, picos=0)
    for _ in range(3):
        (await lim.admit(grant, est)).settle(est.tokens, 0)
    metric = node_pb2.LIMIT_METRIC_MONTHLY_TOKENS
    granted = source.granted["org_a", metric]
    source.fail = True
    served, err = await admit_until_refused(lim, grant, est)
    assert (err.status, err.code) == (429, "quota_exceeded")
    # Leases held + what the control plane had left at its last answer: the whole quota, one node.
    assert (3 + served) * 100 == 10_000, (served, granted)
    source.fail = False
    lim.flushed()
    await lim.close()  # returns everything: the outage's spend reaches the ledger
    assert sum(r.used for r in source.returns if r.metric == metric) == 10_000


def test_month_window_matches_the_control_planes_numbering() -> None:
    index, end = month_window(1_772_323_200.5)  # 2026-03-01T00:00:00.5Z
    assert index == 2026 * 12 + 2 and end == 1_775_001_600.0  # 2026-04-01T00:00:00Z
    index, end = month_window(1_772_323_199.0)  # the last second of February
    assert index == 2026 * 12 + 1 and end == 1_772_323_200.0


async def test_two_nodes_keep_their_shares_of_a_per_minute_limit_and_the_window_stays_within_it() -> None:
    """3:1 traffic over two nodes, then the control plane away: each keeps its fraction of the
    window (what it was granted / what all were granted), so together they stay within the limit."""
    source = LedgerSource(1000)
    busy, quiet = limiter(source), limiter(source)
    grant = key_grant(GrantLimits(org_requests_per_minute=1000))
    for i in range(400):
        (await (quiet if i % 4 == 3 else busy).admit(grant, ONE)).settle(ONE.tokens, 0)
        await asyncio.sleep(0.001)  # a modest rate: leases sized to it, nothing stranded
    source.fail = True
    served = []
    for lim in (busy, quiet):
        n, err = await admit_until_refused(lim, grant, ONE)
        assert err.code == "rate_limit_exceeded"
        served.append(n)
    assert served[0] > 1.5 * served[1] > 0, served  # about 3:1, as the traffic was
    assert 400 + sum(served) <= 1000 + 2  # one request of rounding up per node at most
    await busy.close()
    await quiet.close()
