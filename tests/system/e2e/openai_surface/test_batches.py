"""Batches through the gateway: create, retrieve, list, cancel, pinned to the file's deployment; the
batch's usage recorded once, at the batch price, when the gateway first sees it finished."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import (
    TOKEN_PRICES,
    Surface,
    UsageReader,
    jsonl,
    sdk,
    upstream_paths,
)

USAGE = {"input_tokens": 1000, "output_tokens": 300, "total_tokens": 1300,
         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


async def test_batch_lifecycle_and_usage_recorded_once(gateway: str, fake: FakeProvider, org_a: Surface,
                                                       usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat", "gpt-chat")), purpose="batch")
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h", metadata={"job": "nightly"})
        assert batch.status == "validating" and batch.input_file_id == source.id
        assert fake.requests[-1].json()["input_file_id"] == source.id
        assert (await client.batches.retrieve(batch.id)).status == "validating"
        fake.objects.start(batch.id)
        assert (await client.batches.retrieve(batch.id)).status == "in_progress"
        fake.objects.complete(batch.id, usage=USAGE)
        for _ in range(3):  # retrieve repeatedly, list, retrieve again: still one usage record
            done = await client.batches.retrieve(batch.id)
            assert done.status == "completed" and done.usage is not None and done.usage.total_tokens == 1300
        assert batch.id in [b.id async for b in client.batches.list()]
        assert (await client.batches.retrieve(batch.id)).output_file_id == done.output_file_id
        assert done.output_file_id is not None
        output = (await client.files.content(done.output_file_id)).text.splitlines()
        assert [json.loads(line)["custom_id"] for line in output] == ["r0", "r1"]
    records = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    rec = records[0]
    assert (rec.endpoint, rec.model_name, rec.upstream_slug) == ("/v1/chat/completions", "gpt-chat",
                                                                 "gpt-4.1-mini-upstream")
    assert (rec.input_tokens, rec.output_tokens) == (1000, 300)
    full = 1000 * TOKEN_PRICES.input_per_mtok_micros + 300 * TOKEN_PRICES.output_per_mtok_micros
    assert rec.cost_picos == full * 50 // 100  # the default batch price: half


async def test_cancel(gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        cancelling = await client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and "POST /v1/batches/" + batch.id + "/cancel" in upstream_paths(fake)
        fake.objects.finish_cancel(batch.id)
        assert (await client.batches.retrieve(batch.id)).status == "cancelled"
        fake.objects.batch(batch.id)["status"] = "completed"  # a finished batch cannot be cancelled
        with pytest.raises(openai.ConflictError):
            await client.batches.cancel(batch.id)


async def test_batch_create_checks_the_key_still_may_use_the_files_model(gateway: str, fake: FakeProvider,
                                                                         org_a: Surface) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-other")), purpose="batch")
    narrow = await org_a.key_for(["gpt-chat"])
    fake.reset()
    async with sdk(gateway, narrow) as client:
        with pytest.raises(openai.PermissionDeniedError) as info:
            await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    assert info.value.code == "model_not_allowed" and fake.requests == []


async def test_batch_over_budget_is_refused(gateway: str, fake: FakeProvider, org_a: Surface,
                                            usage: UsageReader) -> None:
    budget_micros = 1_000_000  # $1: room to start a batch; the first batch's recorded cost ($10) exhausts it
    key = await org_a.key_for(budget_micros=budget_micros)
    async with sdk(gateway, key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        first = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        # 20M input tokens at $1/M, at half price: $10, far past the key's budget
        fake.objects.complete(first.id, usage={**USAGE, "input_tokens": 20_000_000, "total_tokens": 20_000_300})
        assert (await client.batches.retrieve(first.id)).status == "completed"
        (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == first.id)
        assert rec.cost_picos == (20_000_000 * 1_000_000 + 300 * 2_000_000) // 2 > budget_micros * 1_000_000
        fake.reset()
        with pytest.raises(openai.RateLimitError) as info:
            await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    assert info.value.code == "budget_exceeded"
    assert "POST /v1/batches" not in upstream_paths(fake)


async def test_usage_recorded_once_when_first_seen_in_a_list_or_by_concurrent_retrieves(
        gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat", "gpt-chat")), purpose="batch")
        listed = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                             completion_window="24h")
        raced = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        fake.objects.complete(listed.id, usage=USAGE)
        seen = {b.id: b.status async for b in client.batches.list()}
        assert seen[listed.id] == "completed"
        await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == listed.id)
        fake.objects.complete(raced.id)  # usage: the sum of the lines' (the fake's line_usage)
        done = await asyncio.gather(*(client.batches.retrieve(raced.id) for _ in range(8)))
        assert {d.status for d in done} == {"completed"}
        await client.batches.retrieve(listed.id)
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == raced.id)
    assert done[0].usage is not None
    assert (rec.input_tokens, rec.output_tokens) == (done[0].usage.input_tokens, done[0].usage.output_tokens)
    await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == listed.id)


async def test_output_and_error_files_belong_to_the_batch_owner(gateway: str, fake: FakeProvider, org_a: Surface,
                                                                org_b: Surface) -> None:
    async with sdk(gateway, org_a.key) as a, sdk(gateway, org_b.key) as b:
        source = await a.files.create(file=("in.jsonl", jsonl("gpt-chat", "gpt-chat", "gpt-chat")), purpose="batch")
        batch = await a.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")
        fake.objects.complete(batch.id, failed=1)
        done = await a.batches.retrieve(batch.id)
        assert done.output_file_id and done.error_file_id
        assert len((await a.files.content(done.output_file_id)).text.splitlines()) == 2
        errors = [json.loads(line) for line in (await a.files.content(done.error_file_id)).text.splitlines()]
        assert [e["custom_id"] for e in errors] == ["r2"] and errors[0]["response"]["status_code"] == 400
        for file_id in (done.output_file_id, done.error_file_id):
            with pytest.raises(openai.NotFoundError):
                await b.files.content(file_id)
            with pytest.raises(openai.NotFoundError):
                await b.files.retrieve(file_id)
