"""The limiter's queue of requests waiting for leases, against an in-memory lease source.

Regression for issue 5's cold-burst 429: a request waiting for a lease used to race newcomers
that took from the pool without queueing and gave up after 32 rounds ("Too many concurrent
requests") although nothing was near a limit.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from data_plane.errors import GatewayError
from data_plane.governance.domain import GrantLimits, KeyGrant, Link
from data_plane.limits import Admission, Estimate, Limiter
from data_plane.settings import LimitSettings
from odock.v1 import node_pb2
from tests.data_plane.limits.ledger_source import LedgerSource

HUGE = 10**12
SMALL = Estimate(tokens=100, picos=0)


def key_grant(limits: GrantLimits, key_id: str = "key_a", *, fail_closed: bool = False) -> KeyGrant:
    """A cached grant of key ``key_id`` in org ``org_a`` with ``limits``."""
    return KeyGrant(org_id="org_a", org_name="a", key_id=key_id, all_models=True, models=frozenset(),
                    expire_at=None, default_models={}, fail_closed=fail_closed, limits=limits)  # fmt: skip


def limiter(source: LedgerSource, **settings: float) -> Limiter:
    """A limiter on ``source`` with a connected control-plane link."""
    return Limiter(source, Link(connected=True, ever_connected=True), LimitSettings(**settings))  # type: ignore[arg-type]


TPM = GrantLimits(org_requests_per_minute=HUGE, key_requests_per_minute=HUGE, key_tokens_per_minute=HUGE)


async def test_a_waiting_request_is_not_overtaken_by_newcomers() -> None:
    """Every grant is raced by new requests that arrive as it lands (as on a busy node): the
    request that asked for it must get it. It used to lose every race to newcomers that took from
    the pool without queueing, and was refused after 32 rounds although no limit was near."""
    source = LedgerSource(HUGE)
    lim = limiter(source)
    grant = key_grant(TPM)
    newcomers: list[asyncio.Task[None]] = []
    errors: list[str] = []

    async def newcomer() -> None:
        try:
            adm = await lim.admit(grant, SMALL)
        except GatewayError as err:
            errors.append(f"newcomer: {err.status} {err.message}")
        else:
            adm.settle(SMALL.tokens, 0)

    waiting = True

    def race(grants: list[node_pb2.LeaseGrant]) -> None:
        # Enough new requests to take all that was granted, arriving with the answer.
        if waiting and len(source.calls) <= 100:
            tokens = max(g.amount for g in grants if g.window_seconds)  # the per-minute grants
            newcomers.extend(asyncio.create_task(newcomer()) for _ in range(tokens // SMALL.tokens + 1))

    source.on_answer = race
    calls = 0
    try:
        big = await lim.admit(grant, Estimate(tokens=5_000, picos=0))
    except GatewayError as err:
        errors.append(f"waiting request: {err.status} {err.message}")
    else:
        calls = len(source.calls)
        big.settle(5_000, 0)
    finally:
        waiting = False
        await asyncio.gather(*newcomers)
        await lim.close()
    assert not errors, Counter(errors)
    assert calls <= 2  # admitted with its own grant, not after one lost race after another


async def test_waiters_are_admitted_in_arrival_order_and_newcomers_queue_behind_them() -> None:
    source = LedgerSource(HUGE)
    source.gate = asyncio.Event()
    lim = limiter(source)
    grant = key_grant(TPM)
    order: list[int] = []

    async def one(i: int, tokens: int) -> None:
        adm = await lim.admit(grant, Estimate(tokens=tokens, picos=0))
        order.append(i)
        adm.settle(tokens, 0)

    # A large request first, then small ones: none of them may overtake it.
    tasks = [asyncio.create_task(one(0, 50_000))]
    tasks += [asyncio.create_task(one(i, 10)) for i in range(1, 20)]
    await asyncio.sleep(0.01)
    assert order == [] and lim.status().get("waiting", 20) == 20
    source.gate.set()
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    # One call for the whole burst (its asks sized when it started: all 20 were queued by then).
    assert len(source.calls) <= 2 and source.max_in_flight == 1
    await lim.close()


async def test_one_fill_at_a_time_per_limit_and_one_call_for_all_short_limits() -> None:
    source = LedgerSource(HUGE, delay=0.01)
    lim = limiter(source)
    all_limits = GrantLimits(HUGE, HUGE, HUGE, HUGE, HUGE, HUGE, HUGE)
    admissions = await asyncio.gather(
        *(lim.admit(key_grant(all_limits), Estimate(tokens=50, picos=10**6)) for _ in range(200))
    )
    assert len(admissions) == 200 and all(isinstance(a, Admission) for a in admissions)
    first = source.calls[0]
    assert len(first) == 7  # every limit of the cold key in the same call
    assert source.max_per_limit == 1  # refills (prefetches) never overlap for one limit
    assert len(source.calls) <= 5
    await lim.close()


async def test_a_request_is_refused_only_when_the_allowance_is_used_up() -> None:
    limit = 1000
    source = LedgerSource(limit)
    lim = limiter(source)
    grant = key_grant(GrantLimits(key_requests_per_minute=limit))
    outcomes = await asyncio.gather(
        *(lim.admit(grant, SMALL) for _ in range(limit + 200)), return_exceptions=True
    )
    admitted = [o for o in outcomes if isinstance(o, Admission)]
    refused = [o for o in outcomes if isinstance(o, GatewayError)]
    assert len(admitted) == limit
    assert len(refused) == 200 and {(e.status, e.code) for e in refused} == {(429, "rate_limit_exceeded")}
    await lim.close()


async def test_a_request_queued_past_the_deadline_gets_503_and_frees_the_queue() -> None:
    """Fail-closed org (a fail-open one is admitted on local limits: tests/data_plane/limits/test_degraded.py)."""
    source = LedgerSource(HUGE)
    source.gate = asyncio.Event()  # the control plane never answers
    lim = limiter(source, wait_seconds=0.05)
    grant = key_grant(TPM, fail_closed=True)
    with pytest.raises(GatewayError) as info:
        await lim.admit(grant, SMALL)
    assert (info.value.status, info.value.code) == (503, "control_plane_unavailable")
    assert lim.status()["waiting"] == 0
    source.gate.set()
    await asyncio.sleep(0.01)  # the late answer lands in the pool
    adm = await lim.admit(grant, SMALL)
    adm.settle(SMALL.tokens, 0)
    await lim.close()


async def test_a_failed_call_backs_off_503s_only_what_the_pool_cannot_cover() -> None:
    """Fail-closed org (a fail-open one is admitted on local limits: tests/data_plane/limits/test_degraded.py)."""
    source = LedgerSource(HUGE)
    lim = limiter(source)
    grant = key_grant(TPM, fail_closed=True)
    (await lim.admit(grant, SMALL)).settle(SMALL.tokens, 0)  # the pool now holds a few requests' worth
    calls = len(source.calls)
    source.fail = True
    with pytest.raises(GatewayError) as info:
        await lim.admit(grant, Estimate(tokens=10**9, picos=0))  # more than is held: needs a call
    assert (info.value.status, info.value.code) == (503, "control_plane_unavailable")
    for _ in range(3):  # backing off: refused at once, without a call
        with pytest.raises(GatewayError):
            await lim.admit(grant, Estimate(tokens=10**9, picos=0))
    assert len(source.calls) == calls + 1
    (await lim.admit(grant, Estimate(tokens=1, picos=0))).settle(1, 0)  # what is held still serves
    await lim.close()


async def test_a_cancelled_waiter_leaves_the_queue_and_unblocks_the_next() -> None:
    source = LedgerSource(HUGE)
    source.gate = asyncio.Event()
    lim = limiter(source)
    grant = key_grant(TPM)
    first = asyncio.create_task(lim.admit(grant, Estimate(tokens=10**6, picos=0)))
    second = asyncio.create_task(lim.admit(grant, SMALL))
    await asyncio.sleep(0.01)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert lim.status()["waiting"] == 1
    source.gate.set()
    (await second).settle(SMALL.tokens, 0)
    await lim.close()
