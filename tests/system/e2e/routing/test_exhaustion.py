"""When everything fails: attempts bounded (ODOCK_ROUTING_MAX_ATTEMPTS, 4 by default), the last
upstream error if one answered, else a 502/504 naming the attempts; and when every deployment is
cooling down, nothing is tried: 503 ``no_deployment_available`` with Retry-After."""

from __future__ import annotations

import re
import time

from tests.fakes.switchable import SwitchableUpstream
from tests.support.dataplane import DataPlaneProcess
from tests.system.e2e.routing.conftest import REQUEST_TOTAL_S, MakeUpstream
from tests.system.e2e.routing.stack import Dep, Reply, Usage, World, chat, sdk

MAX_ATTEMPTS = 4  # ODOCK_ROUTING_MAX_ATTEMPTS' default


def _names_attempts(reply: Reply, attempts: int) -> bool:
    message = str(reply.error()["message"])
    return "attempt" in message.lower() and re.search(rf"\b{attempts}\b", message) is not None


def _last_hit(ups: list[SwitchableUpstream]) -> SwitchableUpstream:
    return max((up for up in ups if up.hits), key=lambda up: up.hits[-1].at)


async def test_attempts_bounded_and_the_last_upstream_error_relayed(gateway: str, world: World,
                                                                    upstream: MakeUpstream, usage: Usage) -> None:
    statuses = [500, 502, 503, 504, 529, 500]
    ups = [await upstream(f"d{i}") for i in range(len(statuses))]
    await world.model("many", [Dep(up) for up in ups])
    for up, status in zip(ups, statuses, strict=True):
        await up.switch("error", status=status)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "many")
    assert sum(up.count() for up in ups) == MAX_ATTEMPTS
    assert max(up.count() for up in ups) == 1  # each on another deployment
    last = _last_hit(ups)
    assert reply.status == last.hits[-1].status
    assert reply.error()["message"] == f"fake {last.name}: upstream error {reply.status}"
    assert (reply.deployment, reply.attempts) == (last.name, MAX_ATTEMPTS)
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.deployment, rec.upstream_attempts, rec.http_status) == (last.name, MAX_ATTEMPTS, reply.status)


async def test_never_more_attempts_than_deployments(gateway: str, world: World, upstream: MakeUpstream) -> None:
    ups = [await upstream("x"), await upstream("y")]
    await world.model("two", [Dep(up) for up in ups])
    for up in ups:
        await up.switch("error", status=503)
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "two")
    assert reply.status == 503 and reply.attempts == 2
    assert [up.count() for up in ups] == [1, 1]


async def test_all_refused_is_502_naming_the_attempts(gateway: str, world: World, upstream: MakeUpstream,
                                                      usage: Usage) -> None:
    ups = [await upstream(f"r{i}") for i in range(3)]
    await world.model("gone", [Dep(up) for up in ups])
    for up in ups:
        await up.switch("refused")
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "gone")
    assert reply.status == 502 and _names_attempts(reply, 3), reply.body
    assert reply.attempts == 3
    rec = (await usage.wait(world.org_id, 1))[reply.request_id]
    assert (rec.upstream_attempts, rec.http_status) == (3, 502)


async def test_all_hanging_is_504_naming_the_attempts(gateway: str, world: World, upstream: MakeUpstream) -> None:
    ups = [await upstream("h0"), await upstream("h1")]
    await world.model("slow", [Dep(up, timeout_s=1.0) for up in ups])
    for up in ups:
        await up.switch("hang")
    began = time.monotonic()
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "slow")
    assert reply.status == 504 and _names_attempts(reply, 2), reply.body
    assert time.monotonic() - began < 4.0
    assert [up.count() for up in ups] == [1, 1]


async def test_attempts_stop_at_the_request_deadline(gateway: str, world: World, upstream: MakeUpstream) -> None:
    ups = [await upstream(f"s{i}") for i in range(MAX_ATTEMPTS)]
    await world.model("late", [Dep(up, timeout_s=1.5) for up in ups])  # 4 x 1.5 s: past the 3.5 s deadline
    for up in ups:
        await up.switch("hang")
    began = time.monotonic()
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "late")
    elapsed = time.monotonic() - began
    assert reply.status == 504, reply.body
    assert REQUEST_TOTAL_S - 0.5 <= elapsed <= REQUEST_TOTAL_S + 1.5, elapsed
    tried = sum(up.count() for up in ups)
    assert tried == 3 and reply.attempts == tried  # the third cut short by the deadline
    assert _names_attempts(reply, tried), reply.body


async def test_an_upstream_answer_beats_a_later_refusal(gateway: str, world: World, upstream: MakeUpstream) -> None:
    answering, refusing = await upstream("answering"), await upstream("refusing")
    await world.model("mixed", [Dep(answering, priority=0), Dep(refusing, priority=1)])
    await answering.switch("error", status=503)
    await refusing.switch("refused")
    async with sdk(gateway, world.key) as client:
        reply = await chat(client, "mixed")
    assert reply.status == 503 and reply.attempts == 2
    assert reply.error()["message"] == "fake answering: upstream error 503"


async def test_every_deployment_open_is_503_no_deployment_available(dp_default: DataPlaneProcess, world: World,
                                                                    upstream: MakeUpstream, usage: Usage) -> None:
    ups = [await upstream("o0"), await upstream("o1")]
    await world.model("open", [Dep(up) for up in ups])
    for up in ups:
        await up.switch("error", status=500)
    replies: list[Reply] = []
    async with sdk(dp_default.url, world.key) as client:
        while len(replies) < 6 and (not replies or replies[-1].status == 500):
            before = sum(up.count() for up in ups)
            replies.append(await chat(client, "open"))
    # 3 consecutive failures each (the default) open both breakers: the 4th request finds none.
    assert [r.status for r in replies] == [500, 500, 500, 503], [r.body for r in replies]
    last = replies[-1]
    assert last.error()["code"] == "no_deployment_available"
    assert 1 <= int(last.headers["retry-after"]) <= 30
    assert sum(up.count() for up in ups) == before == 6  # nothing tried for it
    records = await usage.wait(world.org_id, len(replies))
    assert [records[r.request_id].upstream_attempts for r in replies] == [2, 2, 2, 0]
    assert records[last.request_id].error_code == "no_deployment_available"


async def test_every_deployment_rate_limited_is_503_not_429(gateway: str, world: World,
                                                            upstream: MakeUpstream) -> None:
    ups = [await upstream("l0"), await upstream("l1")]
    await world.model("limited", [Dep(up) for up in ups])
    for up in ups:
        await up.switch("rate_limited", retry_after=5)
    async with sdk(gateway, world.key) as client:
        first = await chat(client, "limited")
        second = await chat(client, "limited")
    assert first.status == 429 and first.attempts == 2  # the last upstream answer
    assert second.status == 503 and second.error()["code"] == "no_deployment_available"
    assert 4 <= int(second.headers["retry-after"]) <= 5
    assert [up.count() for up in ups] == [1, 1]


async def test_a_huge_retry_after_is_bounded(gateway: str, world: World, upstream: MakeUpstream) -> None:
    ups = [await upstream("g0"), await upstream("g1")]
    await world.model("greedy", [Dep(up) for up in ups])
    for up in ups:
        await up.switch("rate_limited", retry_after=10**9)
    async with sdk(gateway, world.key) as client:
        first = await chat(client, "greedy")
        second = await chat(client, "greedy")
    assert first.status == 429
    assert second.status == 503 and second.error()["code"] == "no_deployment_available"
    assert 1 <= int(second.headers["retry-after"]) <= 300  # ODOCK_ROUTING_RETRY_AFTER_MAX's default
