"""Hostile inputs on the new endpoints: smuggled second models (JSON and multipart), another org's ids
used as list cursors, ids that try to escape their path slot, odd but valid batch files."""

from __future__ import annotations

import httpx
import pytest

from tests.fakes import multipart
from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import (
    Surface,
    UsageReader,
    auth,
    jsonl,
    openai_error,
    raw,
    sdk,
    upstream_paths,
)

LINE = ('{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":%s,"messages":[{"role":"user","content":"hi"}]}}')


async def _upload(http: httpx.AsyncClient, key: str, data: bytes, purpose: str = "batch",
                  extra: list[tuple[str, str | tuple[str, bytes, str]]] | None = None) -> httpx.Response:
    fields: list[tuple[str, str | tuple[str, bytes, str]]] = [("purpose", purpose), *(extra or []),
                                                             ("file", ("in.jsonl", data, "application/jsonl"))]
    body, ctype = multipart.build(fields)
    return await http.post("/v1/files", content=body, headers={**auth(key), "Content-Type": ctype})


async def test_batch_line_with_a_second_model_key_is_refused(gateway: str, fake: FakeProvider,
                                                             org_a: Surface) -> None:
    key = await org_a.key_for(["gpt-chat"])
    smuggled = (LINE % (0, '"gpt-chat"')).replace('"messages"', '"model":"gpt-other","messages"').encode()
    async with raw(gateway) as http:
        resp = await _upload(http, key, jsonl("gpt-chat") + smuggled + b"\n")
    assert resp.status_code == 400, resp.text
    assert "Line 2" in openai_error(resp)["message"]
    assert "POST /v1/files" not in upstream_paths(fake)


@pytest.mark.parametrize("model", ["42", "null", '["gpt-chat"]', '{"name":"gpt-chat"}'])
async def test_batch_line_whose_model_is_not_a_string_is_refused(gateway: str, fake: FakeProvider,
                                                                 org_a: Surface, model: str) -> None:
    async with raw(gateway) as http:
        resp = await _upload(http, org_a.key, jsonl("gpt-chat") + (LINE % (1, model)).encode() + b"\n")
    assert resp.status_code == 400 and "Line 2" in openai_error(resp)["message"], resp.text
    assert "POST /v1/files" not in upstream_paths(fake)


async def test_batch_file_with_crlf_and_no_final_newline_is_accepted(gateway: str, fake: FakeProvider,
                                                                     org_a: Surface) -> None:
    data = ((LINE % (0, '"gpt-chat"')) + "\r\n" + (LINE % (1, '"gpt-chat"'))).encode()
    async with raw(gateway) as http:
        resp = await _upload(http, org_a.key, data)
    assert resp.status_code == 200, resp.text
    stored = fake.objects.file(resp.json()["id"])
    assert [line["custom_id"] for line in stored.lines] == ["r0", "r1"]
    assert {line["body"]["model"] for line in stored.lines} == {"gpt-4.1-mini-upstream"}


async def test_multipart_second_model_field_never_reaches_the_provider(gateway: str, fake: FakeProvider,
                                                                       org_a: Surface, usage: UsageReader) -> None:
    key = await org_a.key_for(["whisper-gw", "gpt-chat"])
    wav = ("a.wav", b"RIFF-audio", "audio/wav")
    async with raw(gateway) as http:
        for fields in ([("model", "whisper-gw"), ("model", "transcribe-gw"), ("file", wav)],
                       [("model", "whisper-gw"), ("file", wav), ("model", "transcribe-gw")]):
            body, ctype = multipart.build(fields)  # type: ignore[arg-type]
            resp = await http.post("/v1/audio/transcriptions", content=body,
                                   headers={**auth(key), "Content-Type": ctype})
            assert resp.status_code in (400, 403) or resp.status_code == 200, resp.text
            for rec in fake.requests:
                models = [p.data for p in rec.form() if p.name == "model"]
                assert models == [b"whisper-1"], models  # the key may not use transcribe-gw
        # files: the routing field is never forwarded; whichever model the gateway goes by, it is the
        # one it checked against the key (a model the key may not use is refused in either place)
        narrow = await org_a.key_for(["gpt-chat"])
        refused = await _upload(http, narrow, b"x", purpose="user_data",
                                extra=[("model", "gpt-other"), ("model", "gpt-chat")])
        assert refused.status_code in (400, 403), refused.text
        other = await _upload(http, narrow, b"x", purpose="user_data",
                              extra=[("model", "gpt-chat"), ("model", "gpt-other")])
        assert other.status_code in (200, 400, 403), other.text
    if other.status_code == 200:
        record = await usage.by_request_id(org_a.org_id, other.headers["x-odock-request-id"])
        assert record.model_name == "gpt-chat"
    for rec in fake.requests:
        if rec.native_path == "/v1/files":
            assert multipart.field(rec.form(), "model") is None


async def test_another_orgs_id_as_a_list_cursor_is_like_an_unknown_one(gateway: str, fake: FakeProvider,
                                                                        org_a: Surface, org_b: Surface) -> None:
    async with sdk(gateway, org_a.key) as a, sdk(gateway, org_b.key) as b:
        theirs = await a.files.create(file=("a.txt", b"a"), purpose="user_data")
        src = await a.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        their_batch = await a.batches.create(input_file_id=src.id, endpoint="/v1/chat/completions",
                                             completion_window="24h")
        for i in range(3):
            await b.files.create(file=(f"b{i}.txt", b"b"), purpose="user_data", extra_body={"model": "gpt-chat"})
    async with raw(gateway) as http:
        for path, foreign, missing in (("/v1/files", theirs.id, "file-" + "0" * 22),
                                       ("/v1/batches", their_batch.id, "batch_" + "0" * 24)):
            f = await http.get(path, params={"after": foreign}, headers=auth(org_b.key))
            m = await http.get(path, params={"after": missing}, headers=auth(org_b.key))
            assert f.status_code == m.status_code, (f.text, m.text)
            if f.status_code == 200:
                assert f.json()["data"] == m.json()["data"] and foreign not in f.text
            else:
                assert openai_error(f)["message"].replace(foreign, "X") == openai_error(m)["message"].replace(
                    missing, "X")


@pytest.mark.parametrize("suffix", ["%2Fcontent", "%2F..%2F..%2Fbatches", "/..%2F..%2Fmodels", "%00"])
async def test_ids_cannot_escape_their_path_slot(gateway: str, fake: FakeProvider, org_a: Surface,
                                                 org_b: Surface, suffix: str) -> None:
    async with sdk(gateway, org_a.key) as a:
        theirs = await a.files.create(file=("a.txt", b"secret"), purpose="user_data")
    fake.reset()
    async with raw(gateway) as http:
        resp = await http.get(f"/v1/files/{theirs.id}{suffix}", headers=auth(org_b.key))
    assert resp.status_code in (400, 404), resp.text
    assert b"secret" not in resp.content
    assert fake.requests == []


@pytest.mark.parametrize(("path", "params"), [
    ("/v1/files", {"limit": "-1"}), ("/v1/files", {"limit": "ten"}), ("/v1/files", {"order": "sideways"}),
    ("/v1/batches", {"limit": "-5"}), ("/v1/batches", {"limit": "ten"}),
])
async def test_list_parameters_that_are_not_numbers_are_400(gateway: str, fake: FakeProvider, org_a: Surface,
                                                            path: str, params: dict[str, str]) -> None:
    async with raw(gateway) as http:
        resp = await http.get(path, params=params, headers=auth(org_a.key))
    assert resp.status_code == 400, resp.text
    assert openai_error(resp)["type"] == "invalid_request_error"


@pytest.mark.parametrize(("path", "limit", "most"), [
    ("/v1/files", "0", 10_000), ("/v1/files", "10001", 10_000), ("/v1/batches", "0", 100),
    ("/v1/batches", "101", 100), ("/v1/batches", "99999999999999999999", 100),
])
async def test_list_limits_out_of_range_are_bounded(gateway: str, fake: FakeProvider, org_a: Surface,
                                                    path: str, limit: str, most: int) -> None:
    """OpenAI documents 1..10000 (files) and 1..100 (batches); the gateway takes 0 as the default and a
    larger value as the largest page (docs/files-and-batches.md), or refuses it: never an unbounded page."""
    async with raw(gateway) as http:
        resp = await http.get(path, params={"limit": limit}, headers=auth(org_a.key))
    if resp.status_code == 400:
        assert openai_error(resp)["type"] == "invalid_request_error"
        return
    assert resp.status_code == 200, resp.text
    page = resp.json()
    assert page["object"] == "list" and isinstance(page["has_more"], bool) and len(page["data"]) <= most


@pytest.mark.parametrize(("data", "line"), [
    (b"", None),  # empty batch file
    (b'{"custom_id":"r0"', 1),  # truncated JSON
    (jsonl("gpt-chat") + b"\xff\xfe not utf-8\n", 2),
    (jsonl("gpt-chat") + b"[1, 2]\n", 2),  # not an object
    (jsonl("gpt-chat") + (LINE % (0, '"gpt-chat"')).encode() + b"\n", 2),  # duplicate custom_id
])
async def test_malformed_batch_files_are_refused_before_the_provider(gateway: str, fake: FakeProvider,
                                                                     org_a: Surface, data: bytes,
                                                                     line: int | None) -> None:
    async with raw(gateway) as http:
        resp = await _upload(http, org_a.key, data)
    assert resp.status_code == 400, resp.text
    err = openai_error(resp)
    assert err["type"] == "invalid_request_error"
    if line is not None:
        assert f"Line {line}" in err["message"], err
    assert "POST /v1/files" not in upstream_paths(fake)


@pytest.mark.parametrize("fields", [
    [("model", "gpt-chat"), ("file", ("a.txt", b"a", "text/plain"))],  # no purpose
    [("model", "gpt-chat"), ("purpose", "user_data")],  # no file
    [("model", "gpt-chat"), ("purpose", "homework"), ("file", ("a.txt", b"a", "text/plain"))],
])
async def test_bad_uploads_are_400(gateway: str, fake: FakeProvider, org_a: Surface,
                                   fields: list[tuple[str, str | tuple[str, bytes, str]]]) -> None:
    body, ctype = multipart.build(fields)
    async with raw(gateway) as http:
        resp = await http.post("/v1/files", content=body, headers={**auth(org_a.key), "Content-Type": ctype})
    assert resp.status_code == 400, resp.text
    assert openai_error(resp)["type"] == "invalid_request_error"


async def test_provider_failure_on_a_batch_is_relayed_and_records_no_batch_usage(
        gateway: str, fake: FakeProvider, org_a: Surface, usage: UsageReader) -> None:
    async with sdk(gateway, org_a.key) as client:
        source = await client.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        batch = await client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                            completion_window="24h")
        fake.objects.complete(batch.id)
        fake.knobs.status = 500
        async with raw(gateway) as http:
            resp = await http.get(f"/v1/batches/{batch.id}", headers=auth(org_a.key))
        assert resp.status_code >= 500 and openai_error(resp)
        fake.knobs.status = None
        assert (await client.batches.retrieve(batch.id)).status == "completed"
    await usage.wait(org_a.org_id, 1, lambda r: r.batch_id == batch.id)
