"""``/v1/files`` through the gateway with the official openai SDK: upload, list, retrieve, content, delete,
per-organisation isolation, paging, the model choice, batch input lines rewritten and refused."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from odock.v1 import models_pb2, node_pb2, usage_pb2, usage_pb2_grpc
from tests.fakes.provider import FakeProvider
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned, Provisioner, provision_org
from tests.system.e2e.files.conftest import BATCH_FILE_LIMIT, MODELS


def client(gateway: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{gateway}/v1", max_retries=0)


def batch_line(custom_id: str, model: str, url: str = "/v1/chat/completions") -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": f"hello {custom_id}"}], "max_tokens": 5}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}).encode()


def message(err: openai.APIStatusError) -> str:
    """The error's own message (the SDK's ``message`` prefixes the status)."""
    body = err.body
    assert isinstance(body, dict)
    return str(body["message"])


def upstream_calls(fake: FakeProvider) -> list[str]:
    return [f"{r.method} {r.native_path}" for r in fake.requests if "/files" in r.native_path]


async def test_upload_list_retrieve_content_delete(gateway: str, org: Provisioned, fake: FakeProvider) -> None:
    sdk = client(gateway, org.key)
    data = os.urandom(5 * 1024 * 1024)
    created = await sdk.files.create(file=("data.bin", data), purpose="user_data", extra_body={"model": "gpt-files"})
    assert created.object == "file" and created.bytes == len(data) and created.purpose == "user_data"
    stored = fake.objects.file(created.id)
    assert stored.content == data  # byte fidelity through the spool and the streamed upstream body
    assert stored.account == fake.secret("openai")  # the model's credential, never the virtual key
    assert stored.meta["filename"] == "data.bin"

    listed = await sdk.files.list()
    assert [f.id for f in listed.data] == [created.id]
    assert (await sdk.files.retrieve(created.id)).id == created.id
    content = await sdk.files.content(created.id)
    assert content.read() == data
    deleted = await sdk.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted is True
    assert created.id not in fake.objects.files
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)  # forgotten by the ledger: the gateway's 404
    assert (await sdk.files.list()).data == []


async def test_the_model_comes_from_the_form_the_default_or_is_asked_for(
    gateway: str, admin: Provisioner, fake: FakeProvider
) -> None:
    org = await provision_org(admin, fake, MODELS, default_models={"/v1/files": "gpt-other"})
    sdk = client(gateway, org.key)
    via_default = await sdk.files.create(file=("a.txt", b"abc"), purpose="assistants")
    assert via_default.id in fake.objects.files
    bare = await provision_org(admin, fake, MODELS)
    before = len(upstream_calls(fake))
    with pytest.raises(openai.BadRequestError) as info:
        await client(gateway, bare.key).files.create(file=("a.txt", b"abc"), purpose="assistants")
    assert info.value.code == "missing_model" and "extra_body" in message(info.value)
    assert len(upstream_calls(fake)) == before
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.files.create(file=("a.txt", b"abc"), purpose="nonsense")  # type: ignore[arg-type]
    assert bad.value.code == "invalid_purpose"


async def test_another_org_gets_404_like_a_missing_file_and_never_sees_it(
    gateway: str, org: Provisioned, admin: Provisioner, fake: FakeProvider
) -> None:
    mine = await client(gateway, org.key).files.create(
        file=("mine.txt", b"secret"), purpose="user_data", extra_body={"model": "gpt-files"})
    other = await provision_org(admin, fake, MODELS)
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {other.key}"}) as http:
        before = len(upstream_calls(fake))
        answers = [await http.get(f"/v1/files/{mine.id}"), await http.get(f"/v1/files/{mine.id}/content"),
                   await http.delete(f"/v1/files/{mine.id}")]
        missing = await http.get("/v1/files/file-doesnotexist000")
        hostile = [await http.get(f"/v1/files/{bad}") for bad in ("..%2F..%2Fbatches", "%00", "x" * 200, "file-a b")]
        listed = await http.get("/v1/files")
    assert len(upstream_calls(fake)) == before  # the upstream was never asked
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json() == {"error": {"message": f"No such File object: {mine.id}",
                                           "type": "invalid_request_error", "param": "id", "code": None}}
    assert missing.status_code == 404
    assert [h.status_code for h in hostile] == [404] * 4  # ids that cannot be ids: 404, nothing asked
    assert missing.json()["error"]["message"] == "No such File object: file-doesnotexist000"
    assert listed.json() == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert mine.id in fake.objects.files  # the other org's delete did nothing


async def test_paging_with_after_and_limit(gateway: str, org: Provisioned) -> None:
    sdk = client(gateway, org.key)
    ids = [(await sdk.files.create(file=(f"f{i}.txt", b"x"), purpose="user_data",
                                   extra_body={"model": "gpt-files"})).id for i in range(7)]
    newest_first = ids[::-1]
    seen: list[str] = []
    after: str | None = None
    async with httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {org.key}"}) as http:
        while True:
            params = {"limit": "3", **({"after": after} if after else {})}
            page = (await http.get("/v1/files", params=params)).json()
            seen += [f["id"] for f in page["data"]]
            assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][-1]["id"]
            if not page["has_more"]:
                break
            after = page["last_id"]
        ascending = (await http.get("/v1/files", params={"order": "asc", "limit": "4"})).json()
        clamped = (await http.get("/v1/files", params={"limit": "10001"})).json()
        zero = (await http.get("/v1/files", params={"limit": "0"})).json()
        bad = await http.get("/v1/files", params={"limit": "ten"})
        bad_purpose = await http.get("/v1/files", params={"purpose": "x" * 65})
    assert seen == newest_first
    assert [f["id"] for f in ascending["data"]] == ids[:4] and ascending["has_more"] is True
    assert [f["id"] for f in clamped["data"]] == [f["id"] for f in zero["data"]] == newest_first  # 10000
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"
    assert bad_purpose.status_code == 400 and bad_purpose.json()["error"]["param"] == "purpose"
    # the SDK's auto-pagination walks the same pages
    assert [f.id async for f in sdk.files.list(limit=2)] == newest_first
    assert [f.id async for f in sdk.files.list(purpose="batch")] == []


async def test_batch_lines_are_rewritten_to_the_upstream_slug(
    gateway: str, org: Provisioned, fake: FakeProvider
) -> None:
    lines = [batch_line(f"req-{i}", "gpt-files") for i in range(3)]
    data = b"\n".join(lines) + b"\n"
    created = await client(gateway, org.key).files.create(file=("input.jsonl", data), purpose="batch")
    stored = fake.objects.file(created.id)
    assert stored.model == org.slug("gpt-files")
    assert [line["body"]["model"] for line in stored.lines] == [org.slug("gpt-files")] * 3
    assert stored.content == data.replace(b'"model": "gpt-files"', f'"model": "{org.slug("gpt-files")}"'.encode())
    listed = await client(gateway, org.key).files.list(purpose="batch")
    assert [f.id for f in listed.data] == [created.id]


async def test_batch_files_are_refused_with_the_line_number(
    gateway: str, org: Provisioned, admin: Provisioner, fake: FakeProvider
) -> None:
    _, narrow = await admin.create_key(org.org.id, models=["gpt-other"])
    before = len(upstream_calls(fake))
    sdk = client(gateway, narrow)
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await sdk.files.create(file=("in.jsonl", batch_line("a", "gpt-files")), purpose="batch")
    assert message(denied.value).startswith("Line 1: This API key is not allowed to use the model 'gpt-files'")
    assert isinstance(denied.value.body, dict) and denied.value.body["param"] == "file"
    mixed = batch_line("a", "gpt-other") + b"\n" + batch_line("b", "gpt-other") + b"\n" + batch_line("c", "gpt-files")
    with pytest.raises(openai.BadRequestError) as info:
        await sdk.files.create(file=("in.jsonl", mixed), purpose="batch")
    assert message(info.value).startswith("Line 3: every line must name the same model")
    with pytest.raises(openai.BadRequestError) as family:
        await client(gateway, org.key).files.create(file=("in.jsonl", batch_line("a", "claude")), purpose="batch")
    assert family.value.code == "provider_not_allowed" and message(family.value).startswith("Line 1: ")
    with pytest.raises(openai.NotFoundError) as unknown:
        await sdk.files.create(file=("in.jsonl", b"\n" + batch_line("a", "nope")), purpose="batch")
    assert message(unknown.value).startswith("Line 2: The model 'nope' does not exist")
    with pytest.raises(openai.BadRequestError) as dup:
        await sdk.files.create(file=("in.jsonl", batch_line("a", "gpt-other") + b"\n" + batch_line("a", "gpt-other")),
                               purpose="batch")
    assert message(dup.value) == "Line 2: 'custom_id' 'a' is already used by line 1"
    big = b"\n".join(batch_line(f"r{i}", "gpt-other") for i in range(BATCH_FILE_LIMIT // 100))
    assert len(big) > BATCH_FILE_LIMIT
    with pytest.raises(openai.APIStatusError) as too_big:
        await sdk.files.create(file=("in.jsonl", big), purpose="batch")
    assert too_big.value.status_code == 413
    assert len(upstream_calls(fake)) == before  # nothing reached the provider


async def test_the_key_must_still_be_allowed_the_files_model(
    gateway: str, org: Provisioned, admin: Provisioner, fake: FakeProvider
) -> None:
    created = await client(gateway, org.key).files.create(
        file=("a.txt", b"abc"), purpose="user_data", extra_body={"model": "gpt-files"})
    _, narrow = await admin.create_key(org.org.id, models=["gpt-other"])
    sdk = client(gateway, narrow)
    with pytest.raises(openai.PermissionDeniedError):
        await sdk.files.retrieve(created.id)
    with pytest.raises(openai.PermissionDeniedError):
        await sdk.files.create(file=("a.txt", b"abc"), purpose="user_data", extra_body={"model": "gpt-files"})
    # its org's lists still show the file (ownership is the org's)
    assert [f.id for f in (await sdk.files.list()).data] == [created.id]


async def test_uploads_leave_no_spool_behind(gateway: str, org: Provisioned, upload_dir: Path) -> None:
    sdk = client(gateway, org.key)
    await sdk.files.create(file=("a.jsonl", batch_line("a", "gpt-files")), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        await sdk.files.create(file=("a.jsonl", b"{oops"), purpose="batch")
    assert list(upload_dir.iterdir()) == []


async def test_a_file_whose_model_was_removed_answers_object_deployment_gone(
    gateway: str, org: Provisioned, admin: Provisioner, fake: FakeProvider
) -> None:
    sdk = client(gateway, org.key)
    created = await sdk.files.create(file=("a.txt", b"abc"), purpose="user_data", extra_body={"model": "gpt-other"})
    await admin.models.DeleteModel(models_pb2.DeleteModelRequest(org_id=org.org.id, name="gpt-other"),
                                   metadata=admin.metadata)
    before = len(upstream_calls(fake))
    deadline = asyncio.get_running_loop().time() + 10
    while True:  # the node hears of the deletion through its watch stream
        try:
            await sdk.files.retrieve(created.id)
        except openai.APIStatusError as err:
            assert err.status_code == 502
            assert err.code == "object_deployment_gone"
            assert message(err) == "the deployment holding this object was removed"
            break
        assert asyncio.get_running_loop().time() < deadline, "the deleted model still served the file"
        await asyncio.sleep(0.1)
        before = len(upstream_calls(fake))
    with pytest.raises(openai.APIStatusError) as content:
        await sdk.files.content(created.id)
    assert content.value.status_code == 502
    assert len(upstream_calls(fake)) == before  # no other deployment or model is asked


async def expect_continue(gateway: str, key: str, path: str, length: int) -> bytes:
    """The first line the gateway answers a request head announcing ``length`` bytes with ``Expect: 100-continue``."""
    url = httpx.URL(gateway)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {key}\r\n"
                f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {length}\r\n"
                "Expect: 100-continue\r\n\r\n")
        writer.write(head.encode())
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()


async def test_uploads_have_their_own_body_limit(gateway: str, org: Provisioned) -> None:
    # This node's ODOCK_MAX_BODY_BYTES is 1 MiB: an upload of 2 MiB is invited, a chat body of 2 MiB is not,
    # and an upload over ODOCK_MAX_UPLOAD_BYTES (512 MiB) is refused before it is sent.
    assert await expect_continue(gateway, org.key, "/v1/files", 2 << 20) == b"HTTP/1.1 100 Continue\r\n"
    assert (await expect_continue(gateway, org.key, "/v1/chat/completions", 2 << 20)).startswith(b"HTTP/1.1 413")
    assert (await expect_continue(gateway, org.key, "/v1/files", 600 << 20)).startswith(b"HTTP/1.1 413")


async def records_of(cp: ControlPlaneProcess, org_id: str, count: int) -> list[node_pb2.UsageRecord]:
    """The org's usage records once there are ``count`` (bounded wait)."""
    async with grpc.aio.insecure_channel(cp.address) as channel:
        stub = usage_pb2_grpc.UsageServiceStub(channel)
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            resp = await stub.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(org_id=org_id, page_size=100),
                                               metadata=(("authorization", f"Bearer {cp.admin_token}"),), timeout=10)
            if len(resp.records) >= count or asyncio.get_running_loop().time() > deadline:
                return list(resp.records)
            await asyncio.sleep(0.1)


async def test_every_files_call_leaves_one_record_without_tokens(
    gateway: str, org: Provisioned, cp: ControlPlaneProcess
) -> None:
    sdk = client(gateway, org.key)
    created = await sdk.files.create(file=("a.txt", b"abc"), purpose="user_data", extra_body={"model": "gpt-files"})
    await sdk.files.list()
    await sdk.files.retrieve(created.id)
    (await sdk.files.content(created.id)).read()
    await sdk.files.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await sdk.files.retrieve(created.id)
    records = await records_of(cp, org.org.id, 6)
    seen = sorted((r.endpoint, r.http_status, r.model_name) for r in records)
    assert seen == sorted([
        ("/v1/files", 200, "gpt-files"), ("/v1/files:list", 200, ""), ("/v1/files/{file_id}", 200, "gpt-files"),
        ("/v1/files/{file_id}/content", 200, "gpt-files"), ("/v1/files/{file_id}:delete", 200, "gpt-files"),
        ("/v1/files/{file_id}", 404, ""),
    ])
    assert all(r.input_tokens == 0 and r.output_tokens == 0 and r.cost_picos == 0 for r in records)
    assert len({r.request_id for r in records}) == 6
