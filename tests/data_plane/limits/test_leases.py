"""The lease fetcher on its own, through its seams: a fake AcquireLeases link and a fake listener
standing in for the limiter (``LeaseListener``), on a hand-driven clock."""

from __future__ import annotations

import asyncio

from data_plane.governance.domain import ControlPlaneUnavailable
from data_plane.limits.lanes import Lane
from data_plane.limits.leases import BACKOFF_MAX, BACKOFF_MIN, LeaseFetcher
from data_plane.limits.pools import PoolKey
from data_plane.settings import LimitSettings
from odock.limitmetrics import MONTHLY_TOKENS, TOKENS_PER_MINUTE
from odock.v1 import node_pb2

WALL = 1_800_000_000.0


class FakeLink:
    """AcquireLeases held until released; each call grants ``amount`` per ask, or fails."""

    def __init__(self, amount: int) -> None:
        self.amount = amount
        self.fail = False
        self.calls: list[tuple[list[node_pb2.LeaseAsk], list[node_pb2.LeaseReturn]]] = []
        self.release = asyncio.Event()

    async def acquire_leases(
        self, asks: list[node_pb2.LeaseAsk], returns: list[node_pb2.LeaseReturn]
    ) -> list[node_pb2.LeaseGrant]:
        self.calls.append((asks, returns))
        await self.release.wait()
        if self.fail:
            raise ControlPlaneUnavailable("down")
        out = []
        for ask in asks:
            grant = node_pb2.LeaseGrant(amount=self.amount, limit=10_000, remaining=5_000, window=7)
            if ask.metric == TOKENS_PER_MINUTE:
                grant.window_seconds = 60
                grant.window_end.FromSeconds(int(WALL) + 60)
            else:
                grant.lease_id = f"lse_{len(self.calls)}"
                grant.expire_time.FromSeconds(int(WALL) + 600)
            out.append(grant)
        return out


class FakeListener:
    """Records each ``answered`` with what the lanes held when it came."""

    def __init__(self) -> None:
        self.heard: list[tuple[list[PoolKey], bool, list[int], list[bool]]] = []

    def answered(self, lanes: list[Lane], ok: bool) -> None:
        self.heard.append((
            [lane.key for lane in lanes], ok,
            [lane.pool.available if lane.pool is not None else -1 for lane in lanes],
            [lane.filling for lane in lanes],
        ))  # fmt: skip


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_call_at_a_time_grants_then_backoff_reported_through_the_listener() -> None:
    """One call for the lanes it is given, none more while it runs; its grants are in the pools
    and the lanes free when the listener hears ``ok``; a failure backs them off (0.25 s doubling
    to 2 s, no call meanwhile), keeps the pending returns, and is heard as not ``ok``."""
    now = [100.0]
    link, listener = FakeLink(amount=40), FakeListener()
    lanes: dict[PoolKey, Lane] = {}
    tpm = lanes[("org_a", TOKENS_PER_MINUTE)] = Lane("org_a", "", TOKENS_PER_MINUTE, now[0])
    quota = lanes[("org_a", MONTHLY_TOKENS)] = Lane("org_a", "", MONTHLY_TOKENS, now[0])
    fetcher = LeaseFetcher(link, LimitSettings(), lanes, listener, lambda: now[0], lambda: WALL)

    fetcher.fill([tpm, quota])
    await settle()
    fetcher.prefetch([tpm, quota])  # both filling: no second call
    await settle()
    assert len(link.calls) == 1
    assert [ask.metric for ask in link.calls[0][0]] == [TOKENS_PER_MINUTE, MONTHLY_TOKENS]
    assert listener.heard == [] and tpm.filling and quota.filling
    link.release.set()
    await settle()
    keys = [tpm.key, quota.key]
    assert listener.heard == [(keys, True, [40, 40], [False, False])]
    assert quota.pool is not None and len(quota.pool.leases) == 1

    fetcher.retire(quota)  # its lease goes back with the next call
    assert len(fetcher.pending) == 1
    link.fail = True
    fetcher.fill([tpm])
    await settle()
    assert listener.heard[-1] == ([tpm.key], False, [40], [False])
    assert (tpm.backoff, tpm.fail_until) == (BACKOFF_MIN, now[0] + BACKOFF_MIN)
    assert len(link.calls[-1][1]) == 1 and len(fetcher.pending) == 1  # kept for the next call
    fetcher.prefetch([tpm])  # backed off: no call
    await settle()
    assert len(link.calls) == 2
    for expected in (0.5, 1.0, BACKOFF_MAX, BACKOFF_MAX):
        now[0] = tpm.fail_until
        fetcher.prefetch([tpm])
        await settle()
        assert tpm.backoff == expected and listener.heard[-1][1] is False

    link.fail = False
    now[0] = tpm.fail_until
    fetcher.prefetch([tpm])
    await settle()
    assert listener.heard[-1] == ([tpm.key], True, [80], [False])
    assert (tpm.backoff, tpm.fail_until) == (0.0, 0.0) and fetcher.pending == []
    await fetcher.stop()
