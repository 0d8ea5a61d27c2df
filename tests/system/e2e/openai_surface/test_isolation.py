"""A second organisation can neither see nor fetch the first one's files and batches: its ids answer
exactly like missing ones (nothing reaches the provider), and lists are filtered before paging.

Both orgs use the same provider account, so only the gateway's ownership records keep them apart. The
e2e package runs modules named test_isolation on SQLite and again on PostgreSQL (its conftest)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fakes.provider import FakeProvider
from tests.system.e2e.openai_surface.stack import Surface, auth, jsonl, openai_error, raw, sdk, upstream_paths


def _same_404(foreign: httpx.Response, missing: httpx.Response, foreign_id: str, missing_id: str) -> None:
    assert foreign.status_code == missing.status_code == 404, (foreign.text, missing.text)
    a, b = openai_error(foreign), openai_error(missing)
    assert a == {**b, "message": b["message"].replace(missing_id, foreign_id)}, (a, b)
    assert foreign_id in a["message"]


async def _both(http: httpx.AsyncClient, key: str, method: str, path: str, foreign: str, missing: str,
                **kw: Any) -> None:
    f = await http.request(method, path.format(foreign), headers=auth(key), **kw)
    m = await http.request(method, path.format(missing), headers=auth(key), **kw)
    _same_404(f, m, foreign, missing)
    assert "x-odock-request-id" in f.headers


async def test_other_org_gets_404_like_a_missing_id(gateway: str, fake: FakeProvider, org_a: Surface,
                                                    org_b: Surface) -> None:
    async with sdk(gateway, org_a.key) as a:
        doc = await a.files.create(file=("a.txt", b"secret of a"), purpose="user_data")
        source = await a.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        batch = await a.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                                       completion_window="24h")
    fake.reset()
    missing_file, missing_batch = "file-" + "0" * 22, "batch_" + "0" * 24
    async with raw(gateway) as http:
        await _both(http, org_b.key, "GET", "/v1/files/{}", doc.id, missing_file)
        await _both(http, org_b.key, "GET", "/v1/files/{}/content", doc.id, missing_file)
        await _both(http, org_b.key, "DELETE", "/v1/files/{}", doc.id, missing_file)
        await _both(http, org_b.key, "GET", "/v1/batches/{}", batch.id, missing_batch)
        await _both(http, org_b.key, "POST", "/v1/batches/{}/cancel", batch.id, missing_batch)
        f = await http.post("/v1/batches", headers=auth(org_b.key), json={
            "input_file_id": source.id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        m = await http.post("/v1/batches", headers=auth(org_b.key), json={
            "input_file_id": missing_file, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
        _same_404(f, m, source.id, missing_file)
    assert upstream_paths(fake) == []  # no foreign or missing id was ever asked of the provider
    async with sdk(gateway, org_b.key) as b:
        assert not {doc.id, source.id} & {f.id async for f in b.files.list()}
        assert batch.id not in {x.id async for x in b.batches.list()}
    async with sdk(gateway, org_a.key) as a:  # and A still has everything
        assert (await a.files.content(doc.id)).content == b"secret of a"
        assert (await a.batches.retrieve(batch.id)).id == batch.id


async def test_file_lists_page_over_the_orgs_own_files(gateway: str, fake: FakeProvider, org_a: Surface,
                                                       org_b: Surface) -> None:
    mine: list[str] = []
    theirs: list[str] = []
    async with sdk(gateway, org_a.key) as a, sdk(gateway, org_b.key) as b:
        for i in range(7):  # interleaved, so filtering after the provider's paging would show
            mine.append((await a.files.create(file=(f"a{i}.txt", b"a"), purpose="user_data")).id)
            if i % 2:
                theirs.append((await b.files.create(file=(f"b{i}.txt", b"b"), purpose="user_data",
                                                    extra_body={"model": "gpt-chat"})).id)
        newest_first = mine[::-1]
        pages: list[list[str]] = []
        after: str | None = None
        more = True
        while more:
            page = await (a.files.list(limit=3, after=after) if after else a.files.list(limit=3))
            ids = [f.id for f in page.data]
            pages.append(ids)
            more = bool(page.has_more)
            after = ids[-1] if ids else None
            assert ids and more == (sum(map(len, pages)) < 7), (pages, more)
        assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
        raw_page = (await a.files.with_raw_response.list(limit=3)).http_response.json()
        assert (raw_page["first_id"], raw_page["last_id"]) == (newest_first[0], newest_first[2])
        assert [f.id for f in (await a.files.list(order="asc", limit=100)).data] == mine
        assert [f.id async for f in b.files.list(limit=1)] == theirs[::-1]
        assert [f.id for f in (await b.files.list(purpose="batch")).data] == []


async def test_batch_lists_page_over_the_orgs_own_batches(gateway: str, fake: FakeProvider, org_a: Surface,
                                                          org_b: Surface) -> None:
    mine: list[str] = []
    async with sdk(gateway, org_a.key) as a, sdk(gateway, org_b.key) as b:
        src_a = await a.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        src_b = await b.files.create(file=("in.jsonl", jsonl("gpt-chat")), purpose="batch")
        theirs = []
        for i in range(5):
            mine.append((await a.batches.create(input_file_id=src_a.id, endpoint="/v1/chat/completions",
                                                completion_window="24h")).id)
            if i % 2 == 0:
                theirs.append((await b.batches.create(input_file_id=src_b.id, endpoint="/v1/chat/completions",
                                                      completion_window="24h")).id)
        first = await a.batches.list(limit=2)
        assert [x.id for x in first.data] == mine[::-1][:2] and first.has_more
        assert [x.id async for x in a.batches.list(limit=2)] == mine[::-1]
        last = await a.batches.list(limit=2, after=mine[1])
        assert [x.id for x in last.data] == [mine[0]] and not last.has_more
        assert [x.id async for x in b.batches.list(limit=2)] == theirs[::-1]
