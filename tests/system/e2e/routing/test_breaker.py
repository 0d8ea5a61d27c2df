"""Circuit breaking, on by default: a dead deployment gets no traffic beyond one probe per cooldown
(one at a time), every client request succeeds meanwhile, and a successful probe brings it back."""

from __future__ import annotations

import itertools
import time

from tests.support.dataplane import DataPlaneProcess
from tests.system.e2e.routing.conftest import FAST_COOLDOWN_S, RACE_S, MakeUpstream
from tests.system.e2e.routing.stack import Dep, Usage, World, assert_records_match, chat, sdk, steady

FAILURES_TO_OPEN = 3  # ODOCK_BREAKER_FAILURES' default


async def test_dead_deployment_gets_one_probe_per_cooldown(gateway: str, world: World, upstream: MakeUpstream,
                                                          usage: Usage) -> None:
    dead, alive = await upstream("dead"), await upstream("alive")
    await world.model("br", [Dep(dead), Dep(alive)])
    await dead.switch("error", status=500)
    async with sdk(gateway, world.key) as client:
        replies = await steady(client, "br", 4.0, concurrency=2, pause=0.02)
    assert {r.status for r in replies} == {200} and {r.deployment for r in replies} == {"alive"}
    assert len(replies) > 40  # steady traffic indeed
    hits = [h.at for h in dead.hits]
    assert FAILURES_TO_OPEN <= len(hits) <= FAILURES_TO_OPEN + 1 + 3, len(hits)  # 4 s: probes at >= 1, 2, 4 s
    opened = hits[FAILURES_TO_OPEN - 1]
    # The other loop may have chosen it just before the third failure was counted (RACE_S);
    # after that, nothing but probes, a cooldown apart.
    assert len([t for t in hits if opened < t <= opened + RACE_S]) <= 1
    probes = [opened] + [t for t in hits if t > opened + RACE_S]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert all(gap >= FAST_COOLDOWN_S * 0.9 for gap in gaps), gaps
    assert sum(1 for r in replies if r.attempts == 2) == len(hits)
    assert_records_match(replies, await usage.wait(world.org_id, len(replies)))


async def test_only_one_probe_at_a_time(gateway: str, world: World, upstream: MakeUpstream) -> None:
    stuck, alive = await upstream("stuck"), await upstream("alive")
    await world.model("probe", [Dep(stuck, timeout_s=1.0), Dep(alive)])
    await stuck.switch("hang")
    async with sdk(gateway, world.key) as client:
        replies = await steady(client, "probe", 3.3, concurrency=4, pause=0.02)  # a probe at ~2 s, 1 s long
    assert {r.status for r in replies} == {200}
    # The first requests met the hang together; once their failures opened the breaker, the
    # probes (each hanging for its 1 s timeout) came one at a time.
    opened = sorted(h.ended for h in stuck.hits if h.ended is not None)[FAILURES_TO_OPEN - 1]
    assert not stuck.between(opened + RACE_S, opened + FAST_COOLDOWN_S * 0.9)  # open: nothing
    probes = stuck.between(since=opened + RACE_S)
    assert probes, "no probe within 2.2 s of a 1 s cooldown starting"
    assert stuck.max_in_flight(since=opened + RACE_S) == 1
    assert len(probes) <= 3  # cooldowns of 1, 2 (and 4) s after probes failing in 1 s


async def test_successful_probe_closes_the_breaker(gateway: str, world: World, upstream: MakeUpstream) -> None:
    flaky, alive = await upstream("flaky"), await upstream("alive")
    await world.model("heal", [Dep(flaky), Dep(alive)])
    await flaky.switch("error", status=502)
    async with sdk(gateway, world.key) as client:
        while flaky.count() < FAILURES_TO_OPEN:
            assert (await chat(client, "heal")).status == 200
        opened = flaky.hits[-1].at
        await flaky.switch("healthy")
        replies = await steady(client, "heal", 2.5 + FAST_COOLDOWN_S, concurrency=2, pause=0.02)
    assert {r.status for r in replies} == {200}
    back = flaky.between(since=opened + 0.001)
    assert back, "never probed again"
    assert FAST_COOLDOWN_S * 0.9 <= back[0].at - opened <= FAST_COOLDOWN_S + 1.5
    assert [h.status for h in back] == [200] * len(back)
    # Closed again: its equal share of what came after the probe.
    after_probe = [r for r in replies if r.began > back[0].ended] if back[0].ended else []
    assert len(after_probe) >= 20
    share = sum(1 for r in after_probe if r.deployment == "flaky") / len(after_probe)
    assert 0.35 <= share <= 0.65, share


async def test_breaker_is_on_by_default(dp_default: DataPlaneProcess, world: World, upstream: MakeUpstream,
                                        usage: Usage) -> None:
    dead, alive = await upstream("dead"), await upstream("alive")
    await world.model("dflt", [Dep(dead), Dep(alive)])
    await dead.switch("error", status=503)
    began = time.monotonic()
    async with sdk(dp_default.url, world.key) as client:
        replies = await steady(client, "dflt", 3.0, concurrency=2, pause=0.02)
    assert {r.status for r in replies} == {200} and len(replies) > 30
    # 3 consecutive failures open it (one more may have been chosen while the third was out),
    # and the default cooldown (30 s) lets no probe through during the test.
    assert FAILURES_TO_OPEN <= dead.count() <= FAILURES_TO_OPEN + 1
    assert dead.count(since=began + 1.0) == 0
    assert_records_match(replies, await usage.wait(world.org_id, len(replies)))
