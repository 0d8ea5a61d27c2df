"""Issue 15's usage fields (audio_milliseconds, input_characters, batch_id) on SQLite and
PostgreSQL: stored by ingestion, returned by GetUsageRecord and ListUsageRecords, summed by
GetUsageTotals; a negative or implausible unit count refuses the record like a token count, a
batch id that does not fit is dropped (NULL), never the record."""

from __future__ import annotations

from datetime import datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from control_plane.usage import ingest_batch
from control_plane.usage.records import COUNTER_MAX
from odock.v1 import usage_pb2
from tests.control_plane.usage.env import T0, UsageEnv, batch, record


async def test_units_and_batch_id_round_trip_and_sum(env: UsageEnv) -> None:
    records = [
        record("org_a", request_id="tr-1", model="whisper", input_tokens=0, output_tokens=0,
               audio_milliseconds=61_500, cost_picos=6_150_000_000),
        record("org_a", request_id="tr-2", model="whisper", input_tokens=0, output_tokens=0,
               audio_milliseconds=1_001),
        record("org_a", request_id="sp-1", model="tts", input_tokens=0, output_tokens=0, input_characters=42),
        record("org_a", request_id="bt-1", model="gpt", batch_id="batch_abc123"),
        record("org_a", request_id="plain-1", model="gpt"),
    ]  # fmt: skip
    ack = await ingest_batch(env.sessions, batch(records))
    assert (ack.accepted, ack.rejected) == (5, 0)
    got = await env.usage.GetUsageRecord(usage_pb2.GetUsageRecordRequest(request_id="tr-1"), metadata=env.su)
    assert (got.record.audio_milliseconds, got.record.input_characters, got.record.cost_picos) == (
        61_500, 0, 6_150_000_000)  # fmt: skip
    page = await env.usage.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(org_id="org_a"), metadata=env.su)
    by_id = {r.request_id: (r.audio_milliseconds, r.input_characters, r.batch_id) for r in page.records}
    assert by_id == {"tr-1": (61_500, 0, ""), "tr-2": (1_001, 0, ""), "sp-1": (0, 42, ""),
                     "bt-1": (0, 0, "batch_abc123"), "plain-1": (0, 0, "")}  # fmt: skip
    request = usage_pb2.GetUsageTotalsRequest(
        org_id="org_a", start_time=_ts(T0), end_time=_ts(T0 + timedelta(hours=1)),
        bucket=usage_pb2.USAGE_BUCKET_TOTAL, group_by=[usage_pb2.USAGE_DIMENSION_MODEL],
    )  # fmt: skip
    totals = await env.usage.GetUsageTotals(request, metadata=env.su)
    sums = {t.model_name: (t.requests, t.audio_milliseconds, t.input_characters) for t in totals.totals}
    assert sums == {"whisper": (2, 62_501, 0), "tts": (1, 0, 42), "gpt": (2, 0, 0)}
    # a replay adds nothing to the sums
    again = await ingest_batch(env.sessions, batch(records, sequence=2))
    assert again.duplicates == 5
    totals = await env.usage.GetUsageTotals(request, metadata=env.su)
    assert {t.model_name: t.audio_milliseconds for t in totals.totals}["whisper"] == 62_501


async def test_bad_unit_counts_refuse_the_record_and_bad_batch_ids_are_dropped(env: UsageEnv) -> None:
    bad = [
        record("org_c", request_id="neg", audio_milliseconds=-1),
        record("org_c", request_id="huge", input_characters=COUNTER_MAX + 1),
        record("org_c", request_id="b1", batch_id="batch x"),
        record("org_c", request_id="b2", batch_id="b" * 129),
        record("org_c", request_id="b3", batch_id="b" * 128, input_characters=COUNTER_MAX),
    ]
    ack = await ingest_batch(env.sessions, batch(bad))
    assert (ack.accepted, ack.rejected) == (3, 2)
    page = await env.usage.ListUsageRecords(usage_pb2.ListUsageRecordsRequest(org_id="org_c"), metadata=env.su)
    got = {r.request_id: (r.batch_id, r.input_characters) for r in page.records}
    assert got == {"b1": ("", 0), "b2": ("", 0), "b3": ("b" * 128, COUNTER_MAX)}


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts
