"""Files through the gateway: upload (model chosen by the form field, the org default, or the batch
lines), list, retrieve, content, delete; batch input lines checked against the key and rewritten to
the upstream slug; body limits sized for files."""

from __future__ import annotations

import json
import os

import openai
import pytest

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import (
    BATCH_FILE_LIMIT,
    BODY_LIMIT,
    UPLOAD_LIMIT,
    Surface,
    UsageReader,
    auth,
    jsonl,
    openai_error,
    raw,
    sdk,
    upstream_paths,
)


async def test_file_lifecycle_with_model_form_field(gateway: str, fake: FakeProvider, org_a: Surface,
                                                    usage: UsageReader) -> None:
    data = b"some notes\n" * 100
    async with sdk(gateway, org_a.key) as client:
        created = await client.files.create(file=("notes.txt", data, "text/plain"), purpose="user_data",
                                            extra_body={"model": "gpt-other"})
        assert created.object == "file" and created.bytes == len(data) and created.filename == "notes.txt"
        upload = fake.requests[0]
        assert upload.native_path == "/v1/files"
        assert upload.headers["Authorization"] == f"Bearer {fake.secret('openai')}"
        form = upload.form()
        assert multipart.field(form, "model") is None  # the gateway's routing field never reaches OpenAI
        part = multipart.field(form, "file")
        assert part is not None and part.data == data and part.filename == "notes.txt"
        assert fake.objects.file(created.id).meta["purpose"] == "user_data"
        assert created.id in [f.id for f in (await client.files.list()).data]
        assert (await client.files.retrieve(created.id)).bytes == len(data)
        assert (await client.files.content(created.id)).content == data
        deleted = await client.files.delete(created.id)
        assert deleted.deleted and deleted.id == created.id
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(created.id)
        assert created.id not in [f.id for f in (await client.files.list()).data]
    # create, list, retrieve, content, delete, retrieve (404), list: each metered once
    records = await usage.wait(org_a.org_id, 7, lambda r: r.endpoint.startswith("/v1/files"))
    assert sorted(r.http_status for r in records) == [200] * 6 + [404]


async def test_upload_uses_the_org_default_model_else_missing_model(gateway: str, fake: FakeProvider,
                                                                    org_a: Surface, org_b: Surface) -> None:
    async with sdk(gateway, org_a.key) as a, sdk(gateway, org_b.key) as b:
        created = await a.files.create(file=("x.txt", b"x"), purpose="user_data")
        assert fake.objects.file(created.id).content == b"x"
        fake.reset()
        with pytest.raises(openai.BadRequestError) as info:
            await b.files.create(file=("x.txt", b"x"), purpose="user_data")
    assert info.value.code == "missing_model" and "model" in info.value.message
    assert fake.requests == []


async def test_batch_lines_rewritten_to_the_upstream_slug(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    lines = jsonl("gpt-chat", "gpt-chat", "gpt-chat")
    async with sdk(gateway, org_a.key) as client:
        created = await client.files.create(file=("in.jsonl", lines), purpose="batch")
    stored = fake.objects.file(created.id)
    sent = [json.loads(line) for line in lines.splitlines()]
    assert [line["body"]["model"] for line in stored.lines] == ["gpt-4.1-mini-upstream"] * 3
    for got, want in zip(stored.lines, sent, strict=True):
        assert got["custom_id"] == want["custom_id"] and got["url"] == want["url"]
        assert got["body"]["messages"] == want["body"]["messages"]


@pytest.mark.parametrize(("models", "line"), [
    (("gpt-chat", "gpt-chat", "gpt-other"), 3),  # exists, not in the key's scope
    (("gpt-chat", "no-such-model"), 2),
    (("claude",), 1),  # another provider family
])
async def test_batch_line_the_key_may_not_use_refuses_the_upload(
        gateway: str, fake: FakeProvider, org_a: Surface, models: tuple[str, ...], line: int) -> None:
    key = await org_a.key_for(["gpt-chat", "claude"])
    async with sdk(gateway, key) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.files.create(file=("in.jsonl", jsonl(*models)), purpose="batch")
    assert f"Line {line}" in info.value.message, info.value.message
    assert info.value.type == "invalid_request_error"
    assert "POST /v1/files" not in upstream_paths(fake)  # nothing reached the provider


async def test_files_beyond_the_body_limit_go_through_under_the_upload_limit(
        gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    data = os.urandom(BODY_LIMIT + (1 << 20))
    async with sdk(gateway, org_a.key) as client:
        created = await client.files.create(file=("big.bin", data), purpose="user_data")
        assert created.bytes == len(data) and fake.objects.file(created.id).content == data
        assert (await client.files.content(created.id)).content == data


async def test_upload_over_the_upload_limit_is_413(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    body, ctype = multipart.build([("purpose", "user_data"), ("model", "gpt-chat"),
                                   ("file", ("huge.bin", b"\0" * (UPLOAD_LIMIT + 1), "application/octet-stream"))])
    async with raw(gateway) as http:
        resp = await http.post("/v1/files", content=body, headers={**auth(org_a.key), "Content-Type": ctype})
    assert resp.status_code == 413 and openai_error(resp)["code"] == "request_too_large"
    assert "POST /v1/files" not in upstream_paths(fake)


async def test_batch_file_over_its_limit_is_413(gateway: str, fake: FakeProvider, org_a: Surface) -> None:
    line = jsonl("gpt-chat")
    lines = line * (BATCH_FILE_LIMIT // len(line) + 1)
    lines = b"".join(ln.replace(b'"r0"', f'"r{i}"'.encode()) + b"\n" for i, ln in enumerate(lines.splitlines()))
    assert BATCH_FILE_LIMIT < len(lines) < UPLOAD_LIMIT
    body, ctype = multipart.build([("purpose", "batch"), ("file", ("in.jsonl", lines, "application/jsonl"))])
    async with raw(gateway) as http:
        resp = await http.post("/v1/files", content=body, headers={**auth(org_a.key), "Content-Type": ctype})
    assert resp.status_code == 413 and openai_error(resp)["code"] == "request_too_large"
    assert "POST /v1/files" not in upstream_paths(fake)
