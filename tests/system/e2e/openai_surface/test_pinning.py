"""Files and batches live at one deployment: every later call on an object goes to the deployment that
created it, and an object whose deployment (or model) was removed answers 502 object_deployment_gone.

The model ``dual-gw`` has two deployments on the same fake account, told apart by the path they reach:
``pre`` is the fake's /openai/v1 prefix, ``bare`` its unprefixed /v1."""

from __future__ import annotations

import asyncio

import openai
import pytest
from google.protobuf import field_mask_pb2

from odock.v1 import models_pb2
from tests.fakes.provider import FakeProvider
from tests.support.provision import family_enum
from tests.system.e2e.openai_surface.stack import Surface, jsonl, sdk

SLUG = "gpt-4.1-mini-upstream"


async def _dual(org: Surface, fake: FakeProvider, name: str = "dual-gw") -> models_pb2.Model:
    deps = [models_pb2.Deployment(name="pre", base_url=fake.base_url("openai"), credential="openai-cred",
                                  upstream_slug=SLUG, weight=1),
            models_pb2.Deployment(name="bare", base_url=fake.url + "/v1", credential="openai-cred",
                                  upstream_slug=SLUG, weight=1)]
    model = models_pb2.Model(org_id=org.org_id, name=name, family=family_enum("openai"), deployments=deps)
    created: models_pb2.Model = await org.admin.models.CreateModel(models_pb2.CreateModelRequest(model=model),
                                                                   metadata=org.admin.metadata)
    return created


def _where(fake: FakeProvider, object_id: str) -> set[str]:
    """The deployments (by path prefix) that received a request naming ``object_id``."""
    found = set()
    for rec in fake.requests:
        if object_id in rec.path or object_id.encode() in rec.body:
            found.add("pre" if rec.path.startswith("/openai/") else "bare")
    return found


def _created_at(fake: FakeProvider, index: int) -> str:
    return "pre" if fake.requests[index].path.startswith("/openai/") else "bare"


async def test_every_call_on_a_file_goes_to_its_deployment(gateway: str, fake: FakeProvider,
                                                           org_a: Surface) -> None:
    await _dual(org_a, fake)
    homes: dict[str, str] = {}
    async with sdk(gateway, org_a.key) as client:
        for i in range(8):
            before = len(fake.requests)
            f = await client.files.create(file=(f"f{i}.txt", b"data"), purpose="user_data",
                                          extra_body={"model": "dual-gw"})
            homes[f.id] = _created_at(fake, before)
        for file_id in homes:
            await client.files.retrieve(file_id)
            await client.files.content(file_id)
        for file_id in list(homes)[:4]:
            await client.files.delete(file_id)
    for file_id, home in homes.items():
        assert _where(fake, file_id) == {home}, (file_id, home)


async def test_a_batch_goes_to_its_files_deployment(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    await _dual(org_a, fake)
    async with sdk(gateway, org_a.key) as client:
        for i in range(4):
            before = len(fake.requests)
            source = await client.files.create(file=(f"in{i}.jsonl", jsonl("dual-gw")), purpose="batch")
            home = _created_at(fake, before)
            assert fake.objects.file(source.id).lines[0]["body"]["model"] == SLUG
            batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                                completion_window="24h")
            await client.batches.retrieve(batch.id)
            fake.objects.complete(batch.id)
            done = await client.batches.retrieve(batch.id)
            await client.batches.list()
            assert done.output_file_id is not None
            await client.files.content(done.output_file_id)
            assert _where(fake, batch.id) == {home} and _where(fake, done.output_file_id) == {home}


async def test_object_whose_deployment_or_model_is_gone_is_502(gateway: str, fake: FakeProvider,
                                                                 org_a: Surface) -> None:
    model = await _dual(org_a, fake, "short-lived")
    async with sdk(gateway, org_a.key) as client:
        placed: dict[str, str] = {}
        while len(set(placed.values())) < 2:  # one file on each deployment
            before = len(fake.requests)
            f = await client.files.create(file=("x.txt", b"x"), purpose="user_data",
                                          extra_body={"model": "short-lived"})
            placed[f.id] = _created_at(fake, before)
            assert len(placed) < 40
        on_pre = next(i for i, d in placed.items() if d == "pre")
        on_bare = next(i for i, d in placed.items() if d == "bare")
        del model.deployments[1]  # remove "bare"
        await org_a.admin.models.UpdateModel(models_pb2.UpdateModelRequest(
            model=model, update_mask=field_mask_pb2.FieldMask(paths=["deployments"])), metadata=org_a.admin.metadata)
        await _eventually_502(client, on_bare)
        fake.reset()
        assert (await client.files.retrieve(on_pre)).id == on_pre  # the remaining deployment still serves its own
        await org_a.admin.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org_a.org_id, name="short-lived"),
                                             metadata=org_a.admin.metadata)
        await _eventually_502(client, on_pre)
    assert all(on_bare not in r.path for r in fake.requests)


async def _eventually_502(client: openai.AsyncOpenAI, file_id: str) -> None:
    """The change reaches the node through its invalidation stream: allow it a moment."""
    for _ in range(150):  # 15 s: generous for 2 busy cores
        try:
            await client.files.retrieve(file_id)
        except openai.APIStatusError as exc:
            if exc.status_code == 502:
                assert exc.code == "object_deployment_gone", exc.body
                return
            raise
        await asyncio.sleep(0.1)
    pytest.fail(f"{file_id} still served after its deployment was removed")
