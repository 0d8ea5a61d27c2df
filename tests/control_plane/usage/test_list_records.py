"""UsageService.ListUsageRecords on SQLite and PostgreSQL, over real gRPC with real auth: every
filter against a Python oracle, newest-first keyset pages, org scoping, what ingestion keeps of
the client's request id and error code, and the migration of existing rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from alembic import command
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import text

from control_plane.store.db import _alembic_config, make_engine
from control_plane.usage import ingest_batch
from odock.v1 import common_pb2, node_pb2, usage_pb2
from tests.control_plane.usage.env import T0, Metadata, UsageEnv, batch, open_usage_env, record
from tests.support.postgres import db_url  # noqa: F401


def ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def dataset() -> list[node_pb2.UsageRecord]:
    """60 records, two orgs, some sharing a time (ties), some with client ids and error codes."""
    rng = random.Random(11)
    out = []
    for i in range(60):
        out.append(record(
            "org_a" if i % 3 else "org_b", request_id=f"r{i:03d}",
            when=T0 + timedelta(minutes=rng.randrange(0, 600)),
            key_id=f"key_{i % 2}", model="gpt" if i % 4 else "claude",
            client_request_id=f"cli-{i % 10}" if i % 2 else "",
            error_code="rate_limit_exceeded" if i % 5 == 0 else "",
            outcome=common_pb2.OUTCOME_ERROR if i % 5 == 0 else common_pb2.OUTCOME_COMPLETE,
        ))  # fmt: skip
    out.append(record("org_a", request_id="tie-a", when=T0 + timedelta(hours=3)))
    out.append(record("org_a", request_id="tie-b", when=T0 + timedelta(hours=3)))
    return out


async def list_all(env: UsageEnv, req: usage_pb2.ListUsageRecordsRequest, md: Metadata) -> list[str]:
    """Every page of ``req``; the request ids in order."""
    ids: list[str] = []
    for _ in range(200):
        page = await env.usage.ListUsageRecords(req, metadata=md)
        assert len(page.records) <= (req.page_size or 50)
        ids += [r.request_id for r in page.records]
        if not page.next_page_token:
            return ids
        req.page_token = page.next_page_token
    raise AssertionError("paging did not end")


def oracle(records: list[node_pb2.UsageRecord], **want: str) -> list[str]:
    rows = [r for r in records if all(getattr(r, k) == v for k, v in want.items())]
    rows.sort(key=lambda r: (r.time.seconds, r.time.nanos, r.request_id), reverse=True)
    return [r.request_id for r in rows]


@pytest.fixture
async def data(env: UsageEnv) -> list[node_pb2.UsageRecord]:
    records = dataset()
    ack = await ingest_batch(env.sessions, batch(records))
    assert ack.accepted == len(records)
    return records


@pytest.mark.parametrize(
    "filters",
    [{}, {"org_id": "org_a"}, {"key_id": "key_1"}, {"model_name": "claude"}, {"client_request_id": "cli-3"},
     {"request_id": "r007"}, {"org_id": "org_a", "model_name": "gpt", "key_id": "key_0"},
     {"error_code": "rate_limit_exceeded"}],
    ids=lambda f: ",".join(f) or "none",
)  # fmt: skip
async def test_filters_and_pages_match_the_oracle(
    env: UsageEnv, data: list[node_pb2.UsageRecord], filters: dict[str, str]
) -> None:
    query = {k: v for k, v in filters.items() if k != "error_code"}  # error_code: checked on the result
    got = await list_all(env, usage_pb2.ListUsageRecordsRequest(page_size=7, **query), env.su)  # type: ignore[arg-type]
    want = oracle(data, **query)
    if "error_code" in filters:
        by_id = {r.request_id: r for r in data}
        got = [i for i in got if by_id[i].error_code == filters["error_code"]]
        want = [i for i in want if by_id[i].error_code == filters["error_code"]]
    assert got == want and got


async def test_time_range_is_start_inclusive_end_exclusive(
    env: UsageEnv, data: list[node_pb2.UsageRecord]
) -> None:
    start, end = T0 + timedelta(hours=3), T0 + timedelta(hours=5)
    got = await list_all(
        env, usage_pb2.ListUsageRecordsRequest(start_time=ts(start), end_time=ts(end), page_size=3), env.su
    )
    want = [r.request_id for r in sorted(data, key=lambda r: (r.time.ToDatetime(), r.request_id), reverse=True)
            if start <= r.time.ToDatetime(tzinfo=UTC) < end]  # fmt: skip
    assert got == want and "tie-a" in got and got.index("tie-b") == got.index("tie-a") - 1


async def test_records_carry_the_client_id_and_the_error_code(
    env: UsageEnv, data: list[node_pb2.UsageRecord]
) -> None:
    page = await env.usage.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(request_id="r005"), metadata=env.su
    )
    (rec,) = page.records
    assert (rec.client_request_id, rec.error_code, rec.org_id) == ("cli-5", "rate_limit_exceeded", "org_a")
    got = await env.usage.GetUsageRecord(usage_pb2.GetUsageRecordRequest(request_id="r005"), metadata=env.su)
    assert got.record == rec


async def test_org_admins_see_only_their_org(env: UsageEnv, data: list[node_pb2.UsageRecord]) -> None:
    md = await env.org_admin("org_b")
    got = await list_all(env, usage_pb2.ListUsageRecordsRequest(org_id="org_b", page_size=50), md)
    assert got == oracle(data, org_id="org_b")
    for req, code in [
        (usage_pb2.ListUsageRecordsRequest(), grpc.StatusCode.INVALID_ARGUMENT),  # must name its org
        (usage_pb2.ListUsageRecordsRequest(org_id="org_a"), grpc.StatusCode.PERMISSION_DENIED),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.usage.ListUsageRecords(req, metadata=md)
        assert err.value.code() == code


@pytest.mark.parametrize(
    ("req", "needle"),
    [
        (usage_pb2.ListUsageRecordsRequest(client_request_id="x" * 129), "client_request_id"),
        (usage_pb2.ListUsageRecordsRequest(request_id="a\x00b"), "request_id"),
        (usage_pb2.ListUsageRecordsRequest(page_size=-1), "page_size"),
        (usage_pb2.ListUsageRecordsRequest(start_time=ts(T0), end_time=ts(T0)), "end_time"),
        (usage_pb2.ListUsageRecordsRequest(page_token="not-a-token"), "page_token"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    env: UsageEnv, req: usage_pb2.ListUsageRecordsRequest, needle: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.usage.ListUsageRecords(req, metadata=env.su)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in (err.value.details() or "")


async def test_a_page_token_continues_only_its_own_listing(
    env: UsageEnv, data: list[node_pb2.UsageRecord]
) -> None:
    page = await env.usage.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(page_size=2), metadata=env.su)
    assert page.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.usage.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(page_size=2, org_id="org_a", page_token=page.next_page_token),
            metadata=env.su,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_unusable_trace_strings_are_dropped_not_the_record(env: UsageEnv) -> None:
    bad = [
        record("org_c", request_id="c1", client_request_id="x" * 129),
        record("org_c", request_id="c2", client_request_id="tab\there"),
        record("org_c", request_id="c3", client_request_id="caf\u00e9", error_code="e" * 65),
        record("org_c", request_id="c4", client_request_id="ok-1", error_code="upstream_timeout"),
    ]
    ack = await ingest_batch(env.sessions, batch(bad))
    assert (ack.accepted, ack.rejected) == (4, 0)
    page = await env.usage.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(org_id="org_c"), metadata=env.su
    )
    got = {r.request_id: (r.client_request_id, r.error_code) for r in page.records}
    assert got == {"c1": ("", ""), "c2": ("", ""), "c3": ("", ""), "c4": ("ok-1", "upstream_timeout")}


async def test_migration_0004_keeps_existing_rows(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    cfg = _alembic_config(db_url)
    command.upgrade(cfg, "0003")
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO usage_records (request_id, attempt, node_id, org_id, key_id, model_name, upstream_slug,"
                " family, endpoint, http_status, outcome, streamed, input_tokens, output_tokens, cached_input_tokens,"
                " reasoning_tokens, cost_picos, latency_us, upstream_latency_us, time_to_first_byte_us, time, flags,"
                " receive_time) VALUES ('old-1', 1, 'n', 'org_a', 'k', 'gpt', 's', 1, '/v1/chat/completions', 200,"
                " 1, false, 1, 2, 0, 0, 3, 4, 5, 0, :t, 0, :t)"
            ), {"t": T0})  # fmt: skip
    finally:
        await engine.dispose()
    command.upgrade(cfg, "head")
    async with open_usage_env(db_url) as env:
        page = await env.usage.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(), metadata=env.su)
        (rec,) = page.records
        assert (rec.request_id, rec.client_request_id, rec.error_code, rec.cost_picos) == ("old-1", "", "", 3)
        await ingest_batch(env.sessions, batch([record("org_a", request_id="new-1", client_request_id="c")]))
        page = await env.usage.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(client_request_id="c"), metadata=env.su
        )
        assert [r.request_id for r in page.records] == ["new-1"]
