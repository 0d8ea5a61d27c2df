"""Issue 14's usage fields (deployment, upstream_attempts, requested_model) on SQLite and
PostgreSQL: stored by ingestion, returned by GetUsageRecord and ListUsageRecords; a value that
does not fit is dropped (stored as NULL, read back empty), never the record."""

from __future__ import annotations

from control_plane.usage import ingest_batch
from odock.v1 import usage_pb2
from tests.control_plane.usage.env import UsageEnv, batch, record


async def test_deployment_fields_round_trip(env: UsageEnv) -> None:
    records = [
        record("org_a", request_id="fb-1", model="backup", deployment="eu-west.1", upstream_attempts=3,
               requested_model="gpt:latest"),
        record("org_a", request_id="plain-1"),
    ]  # fmt: skip
    ack = await ingest_batch(env.sessions, batch(records))
    assert (ack.accepted, ack.rejected) == (2, 0)
    got = await env.usage.GetUsageRecord(usage_pb2.GetUsageRecordRequest(request_id="fb-1"), metadata=env.su)
    rec = got.record
    assert (rec.model_name, rec.deployment, rec.upstream_attempts, rec.requested_model) == (
        "backup",
        "eu-west.1",
        3,
        "gpt:latest",
    )
    page = await env.usage.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(org_id="org_a"), metadata=env.su
    )
    by_id = {r.request_id: r for r in page.records}
    assert by_id["fb-1"].deployment == "eu-west.1" and by_id["fb-1"].upstream_attempts == 3
    plain = by_id["plain-1"]
    assert (plain.deployment, plain.upstream_attempts, plain.requested_model) == ("", 0, "")


async def test_unusable_deployment_fields_are_dropped_not_the_record(env: UsageEnv) -> None:
    bad = [
        record("org_c", request_id="b1", deployment="Upper", upstream_attempts=101, requested_model="a b"),
        record("org_c", request_id="b2", deployment="x" * 65, upstream_attempts=100, requested_model="m" * 257),
        record("org_c", request_id="b3", deployment="ok", upstream_attempts=1, requested_model="caf\u00e9\x00"),
        record("org_c", request_id="b4", deployment="d2", upstream_attempts=2, requested_model="caf\u00e9"),
    ]  # fmt: skip
    ack = await ingest_batch(env.sessions, batch(bad))
    assert (ack.accepted, ack.rejected) == (4, 0)
    page = await env.usage.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(org_id="org_c"), metadata=env.su
    )
    got = {r.request_id: (r.deployment, r.upstream_attempts, r.requested_model) for r in page.records}
    assert got == {
        "b1": ("", 0, ""),
        "b2": ("", 100, ""),
        "b3": ("ok", 1, ""),
        "b4": ("d2", 2, "caf\u00e9"),
    }
