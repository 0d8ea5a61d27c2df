"""A key's requests-per-minute limit holds across 4 data-plane nodes behind an uneven balancer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2
from tests.data_plane.limits.stack import (
    MINUTE_SECONDS,
    error_code,
    free_port,
    limited_org,
    post_chat,
    start_cp,
    start_dp,
)
from tests.fakes.provider import FakeProvider

pytestmark = pytest.mark.asyncio(loop_scope="module")

RPM = 600
OVERLOAD = 1.4  # offered load: 840 requests per (scaled) minute


async def test_600_rpm_key_admits_600_per_minute_across_4_nodes_split_90_10(
    fake: FakeProvider, tmp_path: Path
) -> None:
    cp = start_cp(tmp_path / "cp.db", f"127.0.0.1:{free_port()}")
    nodes = []
    try:
        nodes = [start_dp(cp, tmp_path / f"spool{i}") for i in range(4)]
        org = await limited_org(cp, fake, common_pb2.Limits())
        _, key = await org.key(common_pb2.KeyLimits(requests_per_minute=RPM))
        busy, quiet = nodes[0].url, nodes[1].url  # the other two nodes get nothing
        statuses: Counter[tuple[str, int]] = Counter()
        codes: Counter[str] = Counter()
        async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=200)) as client:

            async def one(i: int) -> None:
                base = quiet if i % 10 == 0 else busy
                resp = await post_chat(client, base, "openai", key)
                statuses[(base, resp.status_code)] += 1
                if resp.status_code == 429:
                    codes[error_code("openai", resp)] += 1
                    assert resp.headers["Retry-After"].isdigit()

            # Start just after a window boundary (windows are aligned on the epoch) and stop
            # sending before the next one: every answer then belongs to this window.
            now = time.time()
            start = (now // MINUTE_SECONDS + 1) * MINUTE_SECONDS + 0.05
            await asyncio.sleep(start - now)
            fake.reset()
            interval = MINUTE_SECONDS / (RPM * OVERLOAD)
            tasks = []
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < MINUTE_SECONDS * 0.9:
                tasks.append(asyncio.create_task(one(i)))
                i += 1
                await asyncio.sleep(max(0.0, t0 + i * interval - time.monotonic()))
            await asyncio.gather(*tasks)
        admitted = statuses[(busy, 200)] + statuses[(quiet, 200)]
        refused = statuses[(busy, 429)] + statuses[(quiet, 429)]
        assert admitted + refused == i, statuses
        assert abs(admitted - RPM) <= RPM * 0.05, (admitted, statuses)
        assert set(codes) == {"rate_limit_exceeded"}
        assert statuses[(quiet, 200)] > 0  # the 10% node is served too, not starved
        # Nothing refused reached the provider.
        assert len(fake.requests) == admitted
        print(f"\nadmitted {admitted} of {i} offered in one {MINUTE_SECONDS}s window: {dict(statuses)}")
    finally:
        for node in nodes:
            node.stop()
        cp.stop()
