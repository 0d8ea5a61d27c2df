"""The NodeService's object RPCs over real gRPC (node-token interceptor included), both backends:
ownership per org, refresh, lists with cursors, validation, the once-only batch usage claim."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from sqlalchemy import delete, func, select

from control_plane.store.repositories import orgs
from control_plane.store.tables import OrgRow, ProviderObjectRow
from odock.v1 import node_pb2
from tests.control_plane.services.node_env import Env, add_org, open_env

FILE = node_pb2.OBJECT_KIND_FILE
BATCH = node_pb2.OBJECT_KIND_BATCH


@pytest.fixture
async def env(migrated_db_url: str) -> AsyncIterator[Env]:
    async with open_env(migrated_db_url) as e:
        yield e


def obj(org_id: str, object_id: str, *, kind: node_pb2.ObjectKind.ValueType = FILE, created_at: int = 1_700_000_000,
        purpose: str = "batch", snapshot: bytes = b"{}", key_id: str = "key_a", model: str = "gpt",
        deployment: str = "eu") -> node_pb2.ProviderObject:  # fmt: skip
    return node_pb2.ProviderObject(
        kind=kind, id=object_id, org_id=org_id, key_id=key_id, model_name=model, deployment=deployment,
        purpose=purpose, created_at=created_at, snapshot=snapshot,
    )  # fmt: skip


async def put(env: Env, o: node_pb2.ProviderObject) -> node_pb2.ProviderObject:
    got: node_pb2.ProviderObject = await env.stub.PutObject(node_pb2.PutObjectRequest(object=o))
    return got


def ref(org_id: str, object_id: str, kind: node_pb2.ObjectKind.ValueType = FILE) -> node_pb2.GetObjectRequest:
    return node_pb2.GetObjectRequest(org_id=org_id, kind=kind, id=object_id)


async def status_of(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call  # type: ignore[misc]
    return failed.value.code(), failed.value.details() or ""


async def test_an_object_belongs_to_its_org_and_reads_as_missing_elsewhere(env: Env) -> None:
    a, b = await add_org(env, "a"), await add_org(env, "b")
    stored = await put(env, obj(a, "file-1", snapshot=b'{"id":"file-1"}'))
    assert (stored.org_id, stored.key_id, stored.model_name, stored.deployment) == (a, "key_a", "gpt", "eu")
    assert stored.snapshot == b'{"id":"file-1"}' and not stored.usage_recorded
    assert await env.stub.GetObject(ref(a, "file-1")) == stored

    # Another org: its id reads, deletes and claims exactly like one that does not exist.
    missing = await status_of(env.stub.GetObject(ref(b, "file-nope")))
    assert missing[0] == grpc.StatusCode.NOT_FOUND
    for call in (env.stub.GetObject(ref(b, "file-1")), env.stub.DeleteObject(ref(b, "file-1")),
                 env.stub.PutObject(node_pb2.PutObjectRequest(object=obj(b, "file-1", key_id="key_b")))):  # fmt: skip
        code, details = await status_of(call)
        assert (code, details.replace("file-1", "file-nope")) == missing
    # Its Put took nothing over: still a's, unchanged.
    assert await env.stub.GetObject(ref(a, "file-1")) == stored
    # Same id, other kind: a different object.
    assert (await status_of(env.stub.GetObject(ref(a, "file-1", BATCH))))[0] == grpc.StatusCode.NOT_FOUND


async def test_put_refreshes_the_snapshot_but_never_the_owner_fields(env: Env) -> None:
    a = await add_org(env, "a")
    await put(env, obj(a, "batch_1", kind=BATCH, purpose="/v1/chat/completions", snapshot=b'{"status":"validating"}'))
    again = await put(env, obj(a, "batch_1", kind=BATCH, purpose="", created_at=0, snapshot=b'{"status":"completed"}',
                               key_id="key_other", model="other", deployment="us"))  # fmt: skip
    assert again.snapshot == b'{"status":"completed"}'
    assert (again.key_id, again.model_name, again.deployment) == ("key_a", "gpt", "eu")
    assert (again.purpose, again.created_at) == ("/v1/chat/completions", 1_700_000_000)  # empty/zero: kept
    kept = await put(env, obj(a, "batch_1", kind=BATCH, purpose="/v1/embeddings", created_at=5, snapshot=b""))
    assert (kept.snapshot, kept.purpose, kept.created_at) == (b'{"status":"completed"}', "/v1/embeddings", 5)


async def test_delete_forgets_the_object(env: Env) -> None:
    a = await add_org(env, "a")
    stored = await put(env, obj(a, "file-1"))
    assert await env.stub.DeleteObject(ref(a, "file-1")) == stored
    assert (await status_of(env.stub.GetObject(ref(a, "file-1"))))[0] == grpc.StatusCode.NOT_FOUND
    assert (await status_of(env.stub.DeleteObject(ref(a, "file-1"))))[0] == grpc.StatusCode.NOT_FOUND


async def _list(env: Env, org_id: str, **fields: object) -> tuple[list[str], bool]:
    resp: node_pb2.ListObjectsResponse = await env.stub.ListObjects(
        node_pb2.ListObjectsRequest(org_id=org_id, kind=fields.pop("kind", FILE), **fields)  # type: ignore[arg-type]
    )
    return [o.id for o in resp.objects], resp.has_more


async def test_lists_hold_only_the_orgs_objects_newest_first_with_exact_paging(env: Env) -> None:
    a, b = await add_org(env, "a"), await add_org(env, "b")
    # created_at ties are ordered by id: file-c > file-b at the same second.
    for object_id, created, purpose in [("file-a", 10, "batch"), ("file-b", 20, "assistants"),
                                        ("file-c", 20, "batch"), ("file-d", 30, "batch")]:  # fmt: skip
        await put(env, obj(a, object_id, created_at=created, purpose=purpose))
    await put(env, obj(b, "file-z", created_at=25))
    await put(env, obj(a, "batch_1", kind=BATCH, created_at=40))

    assert await _list(env, a) == (["file-d", "file-c", "file-b", "file-a"], False)
    assert await _list(env, a, ascending=True) == (["file-a", "file-b", "file-c", "file-d"], False)
    assert await _list(env, b) == (["file-z"], False)
    assert await _list(env, a, kind=BATCH) == (["batch_1"], False)
    assert await _list(env, a, purpose="batch") == (["file-d", "file-c", "file-a"], False)
    # Paging: has_more is exact (a page ending on the last object says false).
    assert await _list(env, a, limit=2) == (["file-d", "file-c"], True)
    assert await _list(env, a, limit=2, after="file-c") == (["file-b", "file-a"], False)
    assert await _list(env, a, limit=1, after="file-b", ascending=True) == (["file-c"], True)
    assert await _list(env, a, limit=4) == (["file-d", "file-c", "file-b", "file-a"], False)
    assert await _list(env, a, purpose="batch", after="file-c") == (["file-a"], False)
    # A cursor that is not the org's (missing, or another org's) has no position: an empty page.
    assert await _list(env, a, after="file-nope") == ([], False)
    assert await _list(env, a, after="file-z") == ([], False)
    assert await _list(env, b, after="file-d") == ([], False)


async def test_the_default_page_is_20_and_the_bound_is_10000(env: Env) -> None:
    a = await add_org(env, "a")
    for i in range(25):
        await put(env, obj(a, f"file-{i:02d}", created_at=i))
    ids, more = await _list(env, a)
    assert (len(ids), more, ids[0], ids[-1]) == (20, True, "file-24", "file-05")
    assert await _list(env, a, limit=10_000) == ([f"file-{i:02d}" for i in reversed(range(25))], False)
    code, details = await status_of(env.stub.ListObjects(node_pb2.ListObjectsRequest(org_id=a, kind=FILE, limit=10_001)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("limit:")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "object.id: required"),
        ({"id": "f" * 129}, "object.id: at most 128"),
        ({"id": "file 1"}, "object.id: printable ASCII"),
        ({"id": "file-\n1"}, "object.id: printable ASCII"),
        ({"id": "fichier-é"}, "object.id: printable ASCII"),
        ({"kind": node_pb2.OBJECT_KIND_UNSPECIFIED}, "kind: must be"),
        ({"snapshot": b"x" * (64 * 1024 + 1)}, "object.snapshot: at most 65536 bytes"),
        ({"org_id": "org_unknown"}, "object.org_id: no org"),
        ({"org_id": ""}, "object.org_id: required"),
        ({"model_name": ""}, "object.model_name: required"),
        ({"purpose": "p" * 129}, "object.purpose: at most 128"),
        ({"deployment": "d\x00"}, "object.deployment: control characters"),
        ({"created_at": -1}, "object.created_at: must be >= 0"),
    ],
)
async def test_put_validates_its_input(env: Env, change: dict[str, object], field: str) -> None:
    a = await add_org(env, "a")
    o = obj(a, "file-1")
    for name, value in change.items():
        setattr(o, name, value)
    code, details = await status_of(env.stub.PutObject(node_pb2.PutObjectRequest(object=o)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), details
    ok = obj(a, "file-1", snapshot=b"x" * (64 * 1024))  # the bounds themselves are allowed
    ok.id = "f" * 128
    assert (await put(env, ok)).id == "f" * 128


async def test_get_list_and_claim_validate_their_input(env: Env) -> None:
    a = await add_org(env, "a")
    for call, prefix in [
        (env.stub.GetObject(ref(a, "")), "id: required"),
        (env.stub.GetObject(ref("", "file-1")), "org_id: required"),
        (env.stub.DeleteObject(ref(a, "x" * 129)), "id: at most 128"),
        (env.stub.ListObjects(node_pb2.ListObjectsRequest(org_id=a)), "kind: must be"),
        (env.stub.ListObjects(node_pb2.ListObjectsRequest(org_id=a, kind=FILE, after="a b")), "after: printable"),
        (env.stub.ClaimBatchUsage(ref(a, "file-1", FILE)), "kind: must be OBJECT_KIND_BATCH"),
    ]:
        code, details = await status_of(call)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(prefix), details


async def test_batch_usage_is_claimed_once_even_by_concurrent_callers(env: Env) -> None:
    a, b = await add_org(env, "a"), await add_org(env, "b")
    await put(env, obj(a, "batch_1", kind=BATCH, purpose="/v1/chat/completions"))
    await put(env, obj(a, "batch_2", kind=BATCH))
    results = await asyncio.gather(*(env.stub.ClaimBatchUsage(ref(a, "batch_1", BATCH)) for _ in range(16)))
    assert sorted(r.claimed for r in results) == [False] * 15 + [True]
    assert (await env.stub.GetObject(ref(a, "batch_1", BATCH))).usage_recorded
    # The flag survives a refresh (a node re-reporting the finished batch) and stays claimed.
    assert (await put(env, obj(a, "batch_1", kind=BATCH, snapshot=b'{"status":"completed"}'))).usage_recorded
    assert not (await env.stub.ClaimBatchUsage(ref(a, "batch_1", BATCH))).claimed
    assert not (await env.stub.GetObject(ref(a, "batch_2", BATCH))).usage_recorded  # per batch
    # Another org, or no such batch: NOT_FOUND (and nothing claimed).
    for request in (ref(b, "batch_2", BATCH), ref(a, "batch_nope", BATCH)):
        assert (await status_of(env.stub.ClaimBatchUsage(request)))[0] == grpc.StatusCode.NOT_FOUND
    assert (await env.stub.ClaimBatchUsage(ref(a, "batch_2", BATCH))).claimed


async def test_concurrent_first_reports_of_one_object_both_succeed(env: Env) -> None:
    a = await add_org(env, "a")
    got = await asyncio.gather(*(put(env, obj(a, "file-1", snapshot=b'{"n":%d}' % i)) for i in range(8)))
    assert {g.org_id for g in got} == {a}
    async with env.sm() as s:
        assert (await s.execute(select(func.count()).select_from(ProviderObjectRow))).scalar_one() == 1


async def test_deleting_an_org_deletes_its_objects(env: Env) -> None:
    a, b, c = await add_org(env, "a"), await add_org(env, "b"), await add_org(env, "c")
    for org in (a, b, c):
        await put(env, obj(org, f"file-{org}"))
        await put(env, obj(org, f"batch_{org}", kind=BATCH))
    async with env.sm() as s, s.begin():
        await orgs.delete_with_owned(s, a)  # what OrgService.DeleteOrg does
    async with env.sm() as s, s.begin():
        await s.execute(delete(OrgRow).where(OrgRow.id == b))  # the foreign key alone cascades too
    async with env.sm() as s:
        left = (await s.execute(select(ProviderObjectRow.org_id))).scalars().all()
    assert sorted(left) == [c, c]
