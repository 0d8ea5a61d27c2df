"""Batches through the gateway with the official SDK: per-org isolation (404 like a missing id, never
in a list), paging, usage recorded once though seen finished by many calls on two nodes at once, the
batch's discounted cost counted against the key's budget."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.system.e2e.batches.world import (
    BATCH_PERCENT,
    MODEL,
    PRICES,
    SLUG,
    BatchOrg,
    ledger_entry,
    new_batch,
    sdk,
)
from tests.system.e2e.openai_surface.stack import UsageReader

USAGE = {"input_tokens": 1000, "output_tokens": 300, "total_tokens": 1300,
         "input_tokens_details": {"cached_tokens": 200}, "output_tokens_details": {"reasoning_tokens": 50}}


def _paths(fake: FakeProvider) -> list[str]:
    return [f"{r.method} {r.native_path}" for r in fake.requests]


async def test_another_org_gets_404_like_a_missing_batch_and_never_sees_it(
    nodes: tuple[str, str], fake: FakeProvider, org_a: BatchOrg, org_b: BatchOrg
) -> None:
    gateway = nodes[0]
    async with sdk(gateway, org_a.key) as mine:
        batch = await new_batch(mine)
        source_id = batch.input_file_id
        assert [b.id async for b in mine.batches.list()] == [batch.id]
    fake.reset()
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {org_b.key}"}) as theirs:
        answers = {}
        for batch_id in (batch.id, "batch_0123456789abcdef01234567"):  # the other org's, a missing one
            got = await theirs.get(f"/v1/batches/{batch_id}")
            cancelled = await theirs.post(f"/v1/batches/{batch_id}/cancel")
            assert got.status_code == cancelled.status_code == 404
            assert got.json() == cancelled.json()
            answers[batch_id] = json.dumps(got.json()).replace(batch_id, "<id>")
        assert answers[batch.id] == answers["batch_0123456789abcdef01234567"]
        err = (await theirs.get(f"/v1/batches/{batch.id}")).json()["error"]
        assert err == {"message": f"No such Batch object: {batch.id}", "type": "invalid_request_error",
                       "param": "id", "code": None}
        # Starting a batch on another org's file: the file is missing for them.
        made = await theirs.post("/v1/batches", json={"input_file_id": source_id, "endpoint": "/v1/chat/completions",
                                                      "completion_window": "24h"})
        assert made.status_code == 404
        assert made.json()["error"]["message"] == f"No such File object: {source_id}"
        listed = (await theirs.get("/v1/batches")).json()
        assert listed == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
        assert (await theirs.get("/v1/batches", params={"after": batch.id})).json()["data"] == []
    assert fake.requests == []  # nothing of theirs reached the provider
    async with sdk(gateway, org_b.key) as theirs_sdk:
        with pytest.raises(openai.NotFoundError):
            await theirs_sdk.batches.retrieve(batch.id)
        assert [b.id async for b in theirs_sdk.batches.list()] == []


async def test_a_batch_is_pinned_and_its_usage_recorded_once_across_two_nodes(
    nodes: tuple[str, str], fake: FakeProvider, org_a: BatchOrg, usage: UsageReader, cp: ControlPlaneProcess
) -> None:
    first, second = nodes
    async with sdk(first, org_a.key) as one, sdk(second, org_a.key) as two:
        batch = await new_batch(one)
        assert batch.status == "validating"
        created = fake.requests[-1]
        assert created.native_path == "/v1/batches" and created.json()["input_file_id"] == batch.input_file_id
        assert (await two.batches.retrieve(batch.id)).status == "validating"  # the other node knows it too
        fake.objects.complete(batch.id, usage=USAGE)
        fake.reset()

        async def look(client: openai.AsyncOpenAI) -> str:
            got = await client.batches.retrieve(batch.id)
            listed = [b async for b in client.batches.list()]
            assert [b.id for b in listed] == [batch.id] and listed[0].status == "completed"
            return got.status

        statuses = await asyncio.gather(*(look(c) for c in (one, two) for _ in range(6)))
        assert set(statuses) == {"completed"}
        done = await two.batches.retrieve(batch.id)
        assert done.output_file_id is not None
        # The output file became the org's: its content is served through the gateway.
        lines = (await one.files.content(done.output_file_id)).text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in lines) == ["r0", "r1"]
    assert all(p.startswith(("GET /v1/batches/" + batch.id, "GET /v1/files/")) for p in _paths(fake)), _paths(fake)
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    assert (rec.endpoint, rec.model_name, rec.upstream_slug) == ("/v1/chat/completions", MODEL, SLUG)
    assert (rec.input_tokens, rec.cached_input_tokens, rec.output_tokens, rec.reasoning_tokens) == (1000, 200, 300, 50)
    full = 1000 * PRICES.input_per_mtok_micros + 300 * PRICES.output_per_mtok_micros
    assert rec.cost_picos == full * BATCH_PERCENT // 100
    # The gateway claimed the batch's usage (ClaimBatchUsage): a later claim loses; the snapshot is the final one.
    entry, claimable = await ledger_entry(cp, org_a.org_id, batch.id)
    assert entry.usage_recorded and not claimable
    assert json.loads(entry.snapshot)["status"] == "completed" and entry.purpose == "/v1/chat/completions"
    assert (entry.model_name, entry.key_id) == (MODEL, rec.key_id)
    # The calls themselves are recorded too (no tokens, no batch id): create, retrieves, lists.
    calls = [r for r in await usage.of_org(org_a.org_id) if not r.batch_id and r.endpoint.startswith("/v1/batches")]
    assert {r.endpoint for r in calls} >= {"/v1/batches", "/v1/batches/{batch_id}"}
    assert all(r.input_tokens == r.output_tokens == r.cost_picos == 0 for r in calls)


async def test_paging_follows_openai(nodes: tuple[str, str], fake: FakeProvider, org_a: BatchOrg,
                                     org_b: BatchOrg) -> None:
    async with sdk(nodes[0], org_a.key) as client, sdk(nodes[1], org_b.key) as other:
        made = [await new_batch(client) for _ in range(5)]
        await new_batch(other)  # on the same provider account: never in org_a's pages
        newest_first = [b.id for b in reversed(made)]
        page = await client.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2] and page.has_more
        page = await client.batches.list(limit=2, after=newest_first[1])
        assert [b.id for b in page.data] == newest_first[2:4] and page.has_more
        page = await client.batches.list(limit=2, after=newest_first[3])
        assert [b.id for b in page.data] == newest_first[4:] and not page.has_more
        assert [b.id async for b in client.batches.list(limit=2)] == newest_first  # the SDK's auto-paging
    async with httpx.AsyncClient(base_url=nodes[0], headers={"Authorization": f"Bearer {org_a.key}"}) as raw:
        body = (await raw.get("/v1/batches", params={"limit": "3"})).json()
        assert (body["first_id"], body["last_id"], body["has_more"]) == (newest_first[0], newest_first[2], True)
        for lenient, size in (("0", 5), ("101", 5)):  # 0: the default (20); over 100: 100
            resp = await raw.get("/v1/batches", params={"limit": lenient})
            assert resp.status_code == 200 and [b["id"] for b in resp.json()["data"]] == newest_first[:size]
        resp = await raw.get("/v1/batches", params={"limit": "x"})
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "limit"


async def test_the_batch_cost_counts_against_the_key_budget(nodes: tuple[str, str], fake: FakeProvider,
                                                            org_a: BatchOrg, usage: UsageReader) -> None:
    key = await org_a.limited_key(budget_micros=1_000_000)  # $1
    async with sdk(nodes[0], key) as client:
        batch = await new_batch(client)
        # 2.6M input tokens at $1/M, at 40 %: $1.04, past the budget (the create itself cost nothing).
        fake.objects.complete(batch.id, usage=dict(USAGE, input_tokens=2_600_000, total_tokens=2_600_300))
        assert (await client.batches.retrieve(batch.id)).status == "completed"
        (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
        assert rec.cost_picos > 1_000_000 * 1_000_000
        fake.reset()
        with pytest.raises(openai.RateLimitError) as info:
            await client.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        assert info.value.code == "budget_exceeded"
        assert "POST /v1/batches" not in _paths(fake)
    async with sdk(nodes[0], org_a.key) as unlimited:  # another key of the org: its own budget
        assert (await unlimited.batches.create(input_file_id=batch.input_file_id, endpoint="/v1/chat/completions",
                                               completion_window="24h")).status == "validating"


async def test_bad_requests_never_reach_the_provider(nodes: tuple[str, str], fake: FakeProvider,
                                                     org_a: BatchOrg) -> None:
    async with sdk(nodes[0], org_a.key) as client:
        source = await client.files.create(file=("notes.txt", b"not a batch"), purpose="user_data",
                                           extra_body={"model": MODEL})
        fake.reset()
        with pytest.raises(openai.BadRequestError) as info:
            await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        assert info.value.param == "input_file_id"
        with pytest.raises(openai.BadRequestError) as info:
            await client.batches.create(input_file_id=source.id, endpoint="/v1/images/generations",
                                        completion_window="24h")
        assert info.value.param == "endpoint"
        with pytest.raises(openai.BadRequestError) as info:
            await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={str(i): "v" for i in range(17)})
        assert info.value.param == "metadata"
        with pytest.raises(openai.NotFoundError):
            await client.batches.retrieve("batch_../../v1/files")
    assert fake.requests == []


async def test_calls_reaching_the_provider_count_against_the_request_rate(nodes: tuple[str, str],
                                                                          fake: FakeProvider, org_a: BatchOrg) -> None:
    key = await org_a.limited_key(rpm=3)
    if time.time() % 60 > 50:  # the four calls must fall in one "minute" (aligned on the epoch)
        await asyncio.sleep(60.5 - time.time() % 60)
    async with sdk(nodes[0], key) as client:
        batch = await new_batch(client)  # the upload and the create: two requests
        assert (await client.batches.retrieve(batch.id)).id == batch.id  # the third
        fake.reset()
        with pytest.raises(openai.RateLimitError) as info:
            await client.batches.cancel(batch.id)
        assert info.value.code == "rate_limit_exceeded"
        with pytest.raises(openai.RateLimitError):
            await client.batches.retrieve(batch.id)
        assert fake.requests == []
