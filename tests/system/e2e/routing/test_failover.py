"""One deployment failing (5xx, refused, hanging): every client request succeeds on the other,
with one usage record each naming the deployment that answered and the attempts made."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest

from tests.system.e2e.routing.conftest import FAST_COOLDOWN_S, MakeUpstream
from tests.system.e2e.routing.stack import Dep, Usage, World, assert_records_match, chat, sdk, steady

REQUESTS = 12
FAILURES_TO_OPEN = 3  # ODOCK_BREAKER_FAILURES' default
HANG_TIMEOUT_S = 1.0

FAILURES: list[Any] = [
    *(pytest.param("error", status, id=f"error{status}") for status in (500, 502, 503, 504, 529)),
    pytest.param("refused", None, id="refused"),
    pytest.param("reset", None, id="reset-before-answer"),
    pytest.param("hang", None, id="hang"),
]


@pytest.mark.parametrize(("mode", "status"), FAILURES)
async def test_one_failing_deployment_is_invisible_to_clients(gateway: str, world: World, upstream: MakeUpstream,
                                                              usage: Usage, mode: Any, status: int | None) -> None:
    bad, good = await upstream("bad"), await upstream("good")
    await world.model("pair", [Dep(bad, timeout_s=HANG_TIMEOUT_S), Dep(good, timeout_s=HANG_TIMEOUT_S)])
    await bad.switch(mode, status=status)
    began = time.monotonic()
    async with sdk(gateway, world.key) as client:
        replies = [await chat(client, "pair") for _ in range(REQUESTS)]
    elapsed = time.monotonic() - began
    assert [r.status for r in replies] == [200] * REQUESTS, [r.body for r in replies if r.status != 200]
    assert {r.deployment for r in replies} == {"good"}
    assert {r.attempts for r in replies} <= {1, 2}
    retried = sum(1 for r in replies if r.attempts == 2)
    assert retried >= 1  # the bad one was chosen (equal weights) and failed over
    # Once its breaker is open, the bad one only sees a probe per cooldown (which doubles).
    assert retried <= FAILURES_TO_OPEN + math.ceil(elapsed / FAST_COOLDOWN_S), (retried, elapsed)
    if mode != "refused":  # a refused connection never reaches the fake
        assert bad.count() == retried
    assert good.count() == REQUESTS and {h.model for h in good.hits} == {"good-slug"}
    assert_records_match(replies, await usage.wait(world.org_id, REQUESTS))


async def test_an_outage_changing_shape_stays_invisible(gateway: str, world: World, upstream: MakeUpstream,
                                                        usage: Usage) -> None:
    bad, good = await upstream("bad"), await upstream("good")
    await world.model("turns", [Dep(bad, timeout_s=HANG_TIMEOUT_S), Dep(good)])
    replies = []
    async with sdk(gateway, world.key) as client:
        for mode, status in (("error", 500), ("refused", None), ("hang", None), ("error", 503)):
            await bad.switch(mode, status=status)  # type: ignore[arg-type]
            replies += await steady(client, "turns", 1.0, concurrency=2, pause=0.02)
    assert {r.status for r in replies} == {200} and {r.deployment for r in replies} == {"good"}
    assert_records_match(replies, await usage.wait(world.org_id, len(replies)))
