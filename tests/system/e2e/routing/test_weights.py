"""Smooth weighted choice: a 90/10 split over 1,000 requests holds within a few percent."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import MESSAGES, Dep, Reply, Usage, World, assert_records_match, post

REQUESTS = 1000
CONCURRENCY = 16


async def test_weight_split_90_10(gateway: str, world: World, upstream: MakeUpstream, usage: Usage) -> None:
    heavy, light = await upstream("heavy"), await upstream("light")
    await world.model("split", [Dep(heavy, weight=90), Dep(light, weight=10)])
    body = {"model": "split", "messages": MESSAGES}
    replies: list[Reply] = []
    queue = iter(range(REQUESTS))
    async with httpx.AsyncClient(base_url=gateway, timeout=20,
                                 limits=httpx.Limits(max_connections=CONCURRENCY)) as http:

        async def worker() -> None:
            for _ in queue:
                replies.append(await post(http, world.key, body))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    assert Counter(r.status for r in replies) == {200: REQUESTS}
    by_header = Counter(r.deployment for r in replies)
    assert by_header == {"heavy": heavy.count(), "light": light.count()}
    assert abs(heavy.count() - 900) <= 30, by_header  # 3 points of 100
    assert {r.attempts for r in replies} == {1}
    assert_records_match(replies, await usage.wait(world.org_id, REQUESTS))


async def test_split_among_the_others_while_one_is_out(gateway: str, world: World, upstream: MakeUpstream) -> None:
    big, mid, small = await upstream("big"), await upstream("mid"), await upstream("small")
    await world.model("rest", [Dep(big, weight=6), Dep(mid, weight=3), Dep(small, weight=1)])
    await big.switch("error", status=503)
    body = {"model": "rest", "messages": MESSAGES}
    replies: list[Reply] = []
    queue = iter(range(400))
    async with httpx.AsyncClient(base_url=gateway, timeout=20) as http:

        async def worker() -> None:
            for _ in queue:
                replies.append(await post(http, world.key, body))

        await asyncio.gather(*(worker() for _ in range(8)))
    assert Counter(r.status for r in replies) == {200: 400}
    by_header = Counter(r.deployment for r in replies)
    assert set(by_header) == {"mid", "small"}
    assert 0.70 <= by_header["mid"] / 400 <= 0.80, by_header  # 3:1
