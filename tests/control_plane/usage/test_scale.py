"""50,000 records: ingest them in batches, then query totals. Timings are printed
(run with -s to see them), never asserted; the results are checked exactly."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.usage import ingest_batch
from odock.v1 import common_pb2, usage_pb2
from tests.control_plane.usage.env import T0, UsageEnv, batch, record

N = 50_000
BATCH = 500
DAYS = 30


async def test_50k_records_ingest_and_query(env: UsageEnv, migrated_db_url: str) -> None:
    backend = migrated_db_url.split(":", 1)[0]
    step = DAYS * 86400 / N
    outcomes = [common_pb2.OUTCOME_COMPLETE] * 7 + [common_pb2.OUTCOME_ERROR, common_pb2.OUTCOME_PARTIAL,
                                                     common_pb2.OUTCOME_CANCELLED]  # fmt: skip
    records = [
        record(
            "org_a" if i % 5 else "org_b",
            request_id=f"scale-{i:06d}",
            when=T0 + timedelta(seconds=i * step),
            key_id=f"key_{i % 20}",
            model=f"model-{i % 5}",
            outcome=outcomes[i % 10],
            input_tokens=i % 1000,
            output_tokens=i % 300,
            cost_picos=(i % 1000) * 150_000,
        )
        for i in range(N)
    ]
    began = time.perf_counter()
    accepted = 0
    for seq, start in enumerate(range(0, N, BATCH)):
        accepted += (
            await ingest_batch(env.sessions, batch(records[start : start + BATCH], sequence=seq))
        ).accepted
    ingest_s = time.perf_counter() - began
    assert accepted == N

    start_ts, end_ts = Timestamp(), Timestamp()
    start_ts.FromDatetime(T0)
    end_ts.FromDatetime(T0 + timedelta(days=DAYS))
    queries: dict[str, dict[str, Any]] = {
        "day x key x model, all orgs": {"bucket": usage_pb2.USAGE_BUCKET_DAY, "group_by": [2, 3]},
        "hour, org_a": {"bucket": usage_pb2.USAGE_BUCKET_HOUR, "org_id": "org_a"},
        "total x org": {"bucket": usage_pb2.USAGE_BUCKET_TOTAL, "group_by": [1]},
        "day, one key": {"bucket": usage_pb2.USAGE_BUCKET_DAY, "org_id": "org_a", "key_id": "key_3"},
    }
    timings = {}
    for name, fields in queries.items():
        request = usage_pb2.GetUsageTotalsRequest(
            start_time=start_ts, end_time=end_ts, page_size=1000, **fields
        )
        began = time.perf_counter()
        rows: list[usage_pb2.UsageTotals] = []
        while True:
            page = await env.usage.GetUsageTotals(request, metadata=env.su)
            rows += page.totals
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        timings[name] = (time.perf_counter() - began, len(rows))
        expected = sum(1 for r in records if (not fields.get("org_id") or r.org_id == fields["org_id"])
                       and (not fields.get("key_id") or r.key_id == fields["key_id"]))  # fmt: skip
        assert sum(t.requests for t in rows) == expected, name
        assert sum(t.cost_picos for t in rows) == sum(
            r.cost_picos for r in records if (not fields.get("org_id") or r.org_id == fields["org_id"])
            and (not fields.get("key_id") or r.key_id == fields["key_id"]))  # fmt: skip
    began = time.perf_counter()
    got = await env.usage.GetUsageRecord(
        usage_pb2.GetUsageRecordRequest(request_id="scale-031337"), metadata=env.su
    )
    record_s = time.perf_counter() - began
    expected_record = records[31337]
    expected_record.node_id = "node-1"  # filled in from the batch
    assert got.record == expected_record

    print(f"\n[usage scale {backend}] ingest {N} records in {N // BATCH} batches: {ingest_s:.2f}s "
          f"({N / ingest_s:,.0f} records/s)")  # fmt: skip
    for name, (seconds, count) in timings.items():
        print(f"[usage scale {backend}] totals {name}: {seconds * 1000:.1f} ms ({count} groups)")
    print(f"[usage scale {backend}] raw record by request id: {record_s * 1000:.1f} ms")
