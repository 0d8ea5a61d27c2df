"""A cold burst far below every limit is never refused (issue 5: 429 "Too many concurrent requests").

Every org and key limit is set to 10^12, so any 429 is the node losing track of its own leases, not
a limit. Each round uses a new org and key, so every pool starts empty while the burst arrives.
End to end with real planes; the race itself is reproduced deterministically in test_queue.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.limits.stack import free_port, limited_org, limits_status, post_chat, start_cp, start_dp
from tests.fakes.provider import FakeProvider

pytestmark = pytest.mark.asyncio(loop_scope="module")

HUGE = 10**12
ROUNDS = 3
BURST = 128  # concurrent requests per round
WAVES = 2  # each client sends this many back to back, so later arrivals meet waiters and fills


async def test_cold_burst_with_huge_limits_is_never_refused(fake: FakeProvider, tmp_path: Path) -> None:
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}", minute=3600)
    dp = start_dp(cp, tmp_path / "spool", ODOCK_LIMIT_LEASE_SECONDS="0.05")
    statuses: Counter[int] = Counter()
    bodies: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=BURST)) as client:
            for _ in range(ROUNDS):
                org = await limited_org(
                    cp, fake,
                    common_pb2.Limits(requests_per_minute=HUGE, tokens_per_minute=HUGE,
                                      monthly_token_quota=HUGE, monthly_spend_cap_micros=HUGE),
                    priced=True,
                )  # fmt: skip
                _, key = await org.key(common_pb2.KeyLimits(requests_per_minute=HUGE, tokens_per_minute=HUGE,
                                                            budget_micros=HUGE))  # fmt: skip

                async def client_loop(family: str, key: str = key) -> None:
                    for _ in range(WAVES):
                        resp = await post_chat(client, dp.url, family, key)
                        statuses[resp.status_code] += 1
                        if resp.status_code != 200:
                            bodies.append(resp.text[:200])

                families = ("openai", "anthropic")
                await asyncio.gather(*(client_loop(families[i % 2]) for i in range(BURST)))
        status = limits_status(dp)
    finally:
        dp.stop()
        cp.stop()
    assert statuses == Counter({200: ROUNDS * BURST * WAVES}), (statuses, bodies[:3])
    assert status["admitted"] == ROUNDS * BURST * WAVES and not status["refused"], status
