"""Objects belong to the organisation, not to the key that made them; deleted files are gone for batches;
lists filter by purpose; embeddings batches are rewritten and metered like chat ones."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import Surface, UsageReader, jsonl, sdk, upstream_paths


async def test_another_key_of_the_same_org_sees_the_objects(gateway: str, fake: FakeProvider,
                                                            org_a: Surface) -> None:
    other_key = await org_a.key_for()
    async with sdk(gateway, org_a.key) as first, sdk(gateway, other_key) as second:
        doc = await first.files.create(file=("a.txt", b"shared in the org"), purpose="user_data")
        source = await first.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        batch = await second.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        assert (await second.files.content(doc.id)).content == b"shared in the org"
        assert (await first.batches.retrieve(batch.id)).id == batch.id
        assert {doc.id, source.id} <= {f.id async for f in second.files.list()}


async def test_purpose_filter(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    async with sdk(gateway, org_a.key) as client:
        doc = await client.files.create(file=("a.txt", b"a"), purpose="user_data")
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        assert [f.id for f in (await client.files.list(purpose="batch")).data] == [source.id]
        assert [f.id for f in (await client.files.list(purpose="user_data")).data] == [doc.id]


async def test_batch_from_a_deleted_or_non_batch_file_is_refused(gateway: str, fake: FakeProvider,
                                                                 org_a: Surface) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        doc = await client.files.create(file=("a.txt", b"a"), purpose="user_data", extra_body={"model": "gpt-chat"})
        await client.files.delete(source.id)
        fake.reset()
        with pytest.raises(openai.NotFoundError):
            await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
        assert upstream_paths(fake) == []
        with pytest.raises(openai.BadRequestError):
            await client.batches.create(input_file_id=doc.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    assert not any(r.native_path == "/v1/batches" and r.method == "POST" and r.json().get("input_file_id")
                   == source.id for r in fake.requests)


async def test_embeddings_batch(gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("embed-gw", "embed-gw", url="/v1/embeddings")),
                                           purpose="batch")
        assert {line["body"]["model"] for line in fake.objects.file(source.id).lines} == {
            "text-embedding-3-small-upstream"}
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/embeddings",
                                            completion_window="24h")
        fake.objects.complete(batch.id)
        done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.usage is not None
    (rec,) = await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
    assert (rec.endpoint, rec.model_name) == ("/v1/embeddings", "embed-gw")
    assert (rec.input_tokens, rec.output_tokens) == (done.usage.input_tokens, 0)
