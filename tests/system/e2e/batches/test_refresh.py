"""A list refreshes unfinished batches from their deployment (bounded in time; a failed refresh shows the
batch as last recorded) and settles any it finds finished; a batch whose deployment is gone answers 502."""

from __future__ import annotations

import time

import openai
import pytest

from odock.v1 import models_pb2
from tests.fakes.provider import FakeProvider, Knobs
from tests.system.e2e.batches.world import MODEL, BatchOrg, new_batch, sdk
from tests.system.e2e.openai_surface.stack import UsageReader

USAGE = {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13,
         "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}


async def test_a_list_refreshes_and_settles_and_keeps_what_it_cannot_refresh(
    nodes: tuple[str, str], fake: FakeProvider, org_a: BatchOrg, usage: UsageReader
) -> None:
    async with sdk(nodes[0], org_a.key) as client:
        batch = await new_batch(client)
        fake.objects.complete(batch.id, usage=USAGE)
        fake.knobs = Knobs(status=500)  # the provider fails: the batch as last recorded
        assert [(b.id, b.status) async for b in client.batches.list()] == [(batch.id, "validating")]
        fake.knobs = Knobs(delay_before_headers=10)  # the provider stalls: the list does not wait for it
        started = time.monotonic()
        assert [(b.id, b.status) async for b in client.batches.list()] == [(batch.id, "validating")]
        assert time.monotonic() - started < 8.5  # refreshes are bounded to 5 s
        fake.knobs = Knobs()
        assert [(b.id, b.status) async for b in client.batches.list()] == [(batch.id, "completed")]
    # Only lists saw it finished: they recorded its usage, once.
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    assert (rec.input_tokens, rec.output_tokens) == (10, 3)


async def test_a_batch_whose_model_was_removed_answers_object_deployment_gone(
    nodes: tuple[str, str], fake: FakeProvider, org_a: BatchOrg
) -> None:
    async with sdk(nodes[1], org_a.key) as client:
        batch = await new_batch(client)
        await org_a.admin.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org_a.org_id, name=MODEL),
                                             metadata=org_a.admin.metadata)
        deadline = time.monotonic() + 10
        while True:  # the node hears of the deletion on its watch stream
            try:
                await client.batches.retrieve(batch.id)
            except openai.APIStatusError as exc:
                if exc.status_code == 502:
                    assert exc.code == "object_deployment_gone"
                    assert "the deployment holding this object was removed" in exc.message
                    break
            assert time.monotonic() < deadline
        fake.reset()
        with pytest.raises(openai.APIStatusError) as info:
            await client.batches.cancel(batch.id)
        assert info.value.status_code == 502
        assert [(b.id, b.status) async for b in client.batches.list()] == [(batch.id, "validating")]
    assert [r for r in fake.requests if r.native_path.startswith("/v1/batches")] == []
