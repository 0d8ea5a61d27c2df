"""UsageService over real gRPC with real auth: totals against a Python oracle computed
from the records sent, pagination, org scoping, raw records, one-line errors."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.usage import ingest_batch
from odock.v1 import common_pb2, node_pb2, usage_pb2
from tests.control_plane.usage.env import T0, Metadata, UsageEnv, batch, record

HOUR, DAY, TOTAL = usage_pb2.USAGE_BUCKET_HOUR, usage_pb2.USAGE_BUCKET_DAY, usage_pb2.USAGE_BUCKET_TOTAL
ORG, KEY, MODEL = (
    usage_pb2.USAGE_DIMENSION_ORG,
    usage_pb2.USAGE_DIMENSION_KEY,
    usage_pb2.USAGE_DIMENSION_MODEL,
)
OUTCOMES = [common_pb2.OUTCOME_COMPLETE, common_pb2.OUTCOME_PARTIAL, common_pb2.OUTCOME_CANCELLED,
            common_pb2.OUTCOME_ERROR, common_pb2.OUTCOME_UNSPECIFIED]  # fmt: skip
_OUTCOME_FIELD = {1: "complete", 2: "partial", 3: "cancelled", 4: "error", 0: "unspecified"}


def ts(when: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(when)
    return out


def dataset() -> list[node_pb2.UsageRecord]:
    """Two orgs, three keys, two models, every outcome, spread over ~50 hours from T0 - 3h."""
    rng = random.Random(4)
    out = []
    for i in range(240):
        org = "org_a" if i % 4 else "org_b"
        out.append(record(
            org, when=T0 + timedelta(minutes=rng.randrange(-180, 50 * 60)),
            key_id=f"key_{rng.randrange(3)}", model=rng.choice(["gpt", "claude"]), outcome=rng.choice(OUTCOMES),
            input_tokens=rng.randrange(1000), output_tokens=rng.randrange(500), cached=rng.randrange(50),
            reasoning=rng.randrange(20), cost_picos=rng.randrange(10**9),
        ))  # fmt: skip
    return out


def oracle(
    records: list[node_pb2.UsageRecord],
    start: datetime,
    end: datetime,
    bucket: int,
    dims: tuple[int, ...],
    org: str = "",
    key: str = "",
    model: str = "",
) -> list[tuple[Any, ...]]:
    """Expected totals, straight from the records: aligned range, grouping, filters, sort order."""
    unit = 86400 if bucket == DAY else 3600
    lo = int(start.timestamp()) // unit * unit
    hi = -(-int(end.timestamp()) // unit) * unit
    acc: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0] * 11)
    for r in records:
        t = r.time.seconds
        if (
            not lo <= t < hi
            or (org and r.org_id != org)
            or (key and r.key_id != key)
            or (model and r.model_name != model)
        ):
            continue
        group = (lo if bucket == TOTAL else t // unit * unit,
                 r.org_id if ORG in dims else org, r.key_id if KEY in dims else key,
                 r.model_name if MODEL in dims else model)  # fmt: skip
        a = acc[group]
        a[0] += 1
        a[1 + [1, 2, 3, 4, 0].index(r.outcome)] += 1
        for i, v in enumerate((r.input_tokens, r.output_tokens, r.cached_input_tokens, r.reasoning_tokens,
                               r.cost_picos), start=6):  # fmt: skip
            a[i] += v
    return [(*k, *v) for k, v in sorted(acc.items())]


def flatten(totals: Any) -> list[tuple[Any, ...]]:
    o = "outcomes"
    return [(t.start_time.seconds, t.org_id, t.key_id, t.model_name, t.requests,
             *(getattr(getattr(t, o), _OUTCOME_FIELD[v]) for v in [1, 2, 3, 4, 0]),
             t.input_tokens, t.output_tokens, t.cached_input_tokens, t.reasoning_tokens, t.cost_picos)
            for t in totals]  # fmt: skip


async def totals(env: UsageEnv, md: Metadata, **fields: Any) -> list[tuple[Any, ...]]:
    """Every page of GetUsageTotals, flattened."""
    request = usage_pb2.GetUsageTotalsRequest(**fields)
    out: list[tuple[Any, ...]] = []
    for _ in range(1000):
        page = await env.usage.GetUsageTotals(request, metadata=md)
        out += flatten(page.totals)
        if not page.next_page_token:
            return out
        request.page_token = page.next_page_token
    raise AssertionError("pagination did not end")


async def error_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code(), info.value.details() or ""


@pytest.fixture
async def loaded(env: UsageEnv) -> list[node_pb2.UsageRecord]:
    records = dataset()
    await ingest_batch(env.sessions, batch(records[:150]))
    await ingest_batch(env.sessions, batch(records[100:], sequence=2))  # 50 replayed
    return records


async def test_totals_match_the_records_for_every_bucket_grouping_and_filter(
    env: UsageEnv, loaded: list[node_pb2.UsageRecord]
) -> None:
    start, end = T0 - timedelta(hours=2, minutes=30), T0 + timedelta(hours=40, minutes=10)
    cases = 0
    for bucket, n in itertools.product((HOUR, DAY, TOTAL), range(4)):
        for dims in itertools.combinations((ORG, KEY, MODEL), n):
            want = oracle(loaded, start, end, bucket, dims)
            got = await totals(env, env.su, start_time=ts(start), end_time=ts(end), bucket=bucket, group_by=dims,
                               page_size=7)  # fmt: skip
            assert got == want, (bucket, dims)
            cases += 1
    for bucket, filters in itertools.product(
        (HOUR, DAY), ({"key": "key_1"}, {"model": "claude"}, {"org": "org_b", "key": "key_2", "model": "gpt"})
    ):
        want = oracle(loaded, start, end, bucket, (KEY,), **filters)
        names = {"org": "org_id", "key": "key_id", "model": "model_name"}
        got = await totals(env, env.su, start_time=ts(start), end_time=ts(end), bucket=bucket, group_by=[KEY],
                           **{names[k]: v for k, v in filters.items()})  # fmt: skip
        assert got == want and got, (bucket, filters)
    assert cases == 24


async def test_shapes_of_hour_and_day_buckets(env: UsageEnv, loaded: list[node_pb2.UsageRecord]) -> None:
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=3)
    by_day = await totals(env, env.su, start_time=ts(start), end_time=ts(end), bucket=DAY)
    # Records span T0-3h .. T0+50h: the day before T0 and three days from T0.
    assert [r[0] for r in by_day] == [int((T0 + timedelta(days=d)).timestamp()) for d in (-1, 0, 1, 2)]
    assert sum(r[4] for r in by_day) == len(loaded)
    by_hour = await totals(env, env.su, start_time=ts(start), end_time=ts(end), bucket=HOUR)
    assert all(r[0] % 3600 == 0 for r in by_hour) and sum(r[4] for r in by_hour) == len(loaded)
    assert [r[0] for r in by_hour] == sorted({r[0] for r in by_hour})
    total = await totals(env, env.su, start_time=ts(start), end_time=ts(end), bucket=TOTAL)
    assert len(total) == 1 and total[0][4:] == tuple(map(sum, zip(*(r[4:] for r in by_day), strict=True)))


async def test_range_is_widened_to_whole_buckets(env: UsageEnv, loaded: list[node_pb2.UsageRecord]) -> None:
    request = usage_pb2.GetUsageTotalsRequest(
        start_time=ts(T0 + timedelta(hours=5, minutes=30)), end_time=ts(T0 + timedelta(hours=7, seconds=1)),
        bucket=HOUR)  # fmt: skip
    page = await env.usage.GetUsageTotals(request, metadata=env.su)
    assert page.start_time.ToDatetime().hour == 5 and page.end_time.ToDatetime().hour == 8
    request.bucket = DAY
    page = await env.usage.GetUsageTotals(request, metadata=env.su)
    assert (page.start_time.seconds, page.end_time.seconds) == (
        int(T0.timestamp()),
        int(T0.timestamp()) + 86400,
    )


async def test_pages_cover_the_listing_exactly_once(
    env: UsageEnv, loaded: list[node_pb2.UsageRecord]
) -> None:
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=3)
    base: dict[str, Any] = {
        "start_time": ts(start),
        "end_time": ts(end),
        "bucket": HOUR,
        "group_by": [KEY, MODEL],
    }
    whole = await totals(env, env.su, page_size=1000, **base)
    for size in (1, 4):
        assert await totals(env, env.su, page_size=size, **base) == whole
    first = await env.usage.GetUsageTotals(
        usage_pb2.GetUsageTotalsRequest(page_size=2, **base), metadata=env.su
    )
    assert len(first.totals) == 2 and first.next_page_token
    other = usage_pb2.GetUsageTotalsRequest(page_token=first.next_page_token, **{**base, "group_by": [MODEL]})
    code, msg = await error_of(env.usage.GetUsageTotals(other, metadata=env.su))
    assert (code, msg) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token: page token does not belong to this listing",
    )


async def test_org_admins_see_only_their_org(env: UsageEnv, loaded: list[node_pb2.UsageRecord]) -> None:
    md_a = await env.org_admin("org_a")
    start, end = T0 - timedelta(days=1), T0 + timedelta(days=3)
    got = await totals(env, md_a, org_id="org_a", start_time=ts(start), end_time=ts(end), bucket=DAY,
                       group_by=[ORG, KEY])  # fmt: skip
    assert got == oracle(loaded, start, end, DAY, (ORG, KEY), org="org_a")
    assert {r[1] for r in got} == {"org_a"}
    request = usage_pb2.GetUsageTotalsRequest(start_time=ts(start), bucket=DAY)
    assert await error_of(env.usage.GetUsageTotals(request, metadata=md_a)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "org_id: required",
    )
    request.org_id = "org_b"
    assert await error_of(env.usage.GetUsageTotals(request, metadata=md_a)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "this token is scoped to another org",
    )
    code, _ = await error_of(env.usage.GetUsageTotals(request, metadata=env.node_md))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_raw_record_by_request_id(env: UsageEnv) -> None:
    sent = record("org_a", request_id="req-raw-1", attempt=2, node_id="node-9", streamed=True, flags=2,
                  time_to_first_byte_us=777, cached=3, reasoning=4)  # fmt: skip
    sent.time.FromDatetime(T0 + timedelta(seconds=1, microseconds=5))
    await ingest_batch(env.sessions, batch([sent, record("org_b", request_id="req-raw-b")]))
    got = await env.usage.GetUsageRecord(
        usage_pb2.GetUsageRecordRequest(request_id="req-raw-1"), metadata=env.su
    )
    assert got.record == sent
    assert got.receive_time.seconds >= sent.time.seconds
    md_a = await env.org_admin("org_a")
    mine = await env.usage.GetUsageRecord(
        usage_pb2.GetUsageRecordRequest(request_id="req-raw-1", org_id="org_a"), metadata=md_a
    )
    assert mine.record == sent
    for request_id in ("req-raw-b", "req-none"):
        request = usage_pb2.GetUsageRecordRequest(request_id=request_id, org_id="org_a")
        assert await error_of(env.usage.GetUsageRecord(request, metadata=md_a)) == (
            grpc.StatusCode.NOT_FOUND,
            f"no usage record for request {request_id!r}",
        )
    empty = usage_pb2.GetUsageRecordRequest(org_id="org_a")
    assert await error_of(env.usage.GetUsageRecord(empty, metadata=md_a)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id: required",
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "start_time: required"),
        ({"start_time": ts(T0), "end_time": ts(T0)}, "end_time: must be after start_time"),
        ({"start_time": ts(T0), "bucket": 9}, "bucket: unknown bucket 9"),
        ({"start_time": ts(T0), "group_by": [0]}, "group_by: unknown dimension 0 (use ORG, KEY or MODEL)"),
        (
            {"start_time": ts(T0), "model_name": "a b"},
            "model_name: must not contain '/', '?', '#', whitespace or control characters",
        ),
        ({"start_time": ts(T0), "key_id": "k\x00"}, "key_id: must not contain NUL characters"),
        ({"start_time": Timestamp(seconds=-5)}, "start_time: must not be before 1970-01-01T00:00:00Z"),
        ({"start_time": ts(T0), "page_size": -1}, "page_size: must not be negative"),
        ({"start_time": ts(T0), "page_token": "%%%"}, "page_token: malformed page token"),
    ],
)
async def test_invalid_totals_requests_name_the_field(
    env: UsageEnv, fields: dict[str, Any], message: str
) -> None:
    call = env.usage.GetUsageTotals(usage_pb2.GetUsageTotalsRequest(**fields), metadata=env.su)
    assert await error_of(call) == (grpc.StatusCode.INVALID_ARGUMENT, message)


async def test_empty_range_has_no_totals(env: UsageEnv) -> None:
    await ingest_batch(env.sessions, batch([record(when=T0)]))
    for bucket in (HOUR, DAY, TOTAL):
        later = usage_pb2.GetUsageTotalsRequest(start_time=ts(T0 + timedelta(days=2)), bucket=bucket)
        page = await env.usage.GetUsageTotals(later, metadata=env.su)
        assert list(page.totals) == [] and page.next_page_token == ""
