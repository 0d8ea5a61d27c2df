"""Limits are reserved and settled once per client request, whatever the attempts: a key allowed N
requests a minute gets N answers while each of them needed two attempts."""

from __future__ import annotations

import asyncio
import time

from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import Dep, Usage, World, chat, sdk

MINUTE_SECONDS = 60  # the planes' default per-minute window, aligned on the epoch
LIMIT = 3  # = ODOCK_BREAKER_FAILURES' default: each admitted request fails over once


async def test_a_limit_of_n_admits_n_client_requests_not_n_attempts(gateway: str, world: World,
                                                                    upstream: MakeUpstream, usage: Usage) -> None:
    failing, spare = await upstream("failing"), await upstream("spare")
    await world.model("lim", [Dep(failing, priority=0), Dep(spare, priority=1)])
    await failing.switch("error", status=500)
    key = await world.limited_key(LIMIT)
    # Windows are aligned on the epoch: requests straddling a boundary would meet two of them.
    left = MINUTE_SECONDS - time.time() % MINUTE_SECONDS
    if left < 3:  # the test takes well under a second
        await asyncio.sleep(left + 0.05)
    async with sdk(gateway, key) as client:
        replies = [await chat(client, "lim") for _ in range(LIMIT + 2)]
    assert [r.status for r in replies] == [200] * LIMIT + [429, 429], [r.body for r in replies]
    assert [(r.deployment, r.attempts) for r in replies[:LIMIT]] == [("spare", 2)] * LIMIT
    assert {r.headers["x-ratelimit-limit-requests"] for r in replies[:LIMIT]} == {str(LIMIT)}
    assert replies[-1].error()["code"]
    assert (failing.count(), spare.count()) == (LIMIT, LIMIT)
    records = await usage.wait(world.org_id, LIMIT + 2)
    assert [records[r.request_id].upstream_attempts for r in replies] == [2] * LIMIT + [0, 0]
