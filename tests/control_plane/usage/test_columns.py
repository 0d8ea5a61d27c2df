"""The column-wise fast path (usage/columns.py) against the record-by-record rules (records.prepare).

The fast path must store exactly what prepare() would, and give up (None) on any batch holding
a record prepare() rejects, so that the slow path names and counts it. Values that are
special in the writers' encodings (PostgreSQL array literals, SQLite's time text) round-trip.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store.tables import UsageRecordRow
from control_plane.usage import columns, ingest_batch
from control_plane.usage.records import BadRecord, prepare
from odock.v1 import node_pb2
from tests.control_plane.usage.env import T0, batch, record, rollups_match_records

Sessions = async_sessionmaker[AsyncSession]
RECEIVED = datetime(2026, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)
# Strings that mean something in an array literal, in SQL, or to a naive join.
AWKWARD = ('a"b', "back\\slash", "{x,y}", "NULL", "com,ma", "ünï ☃", " lead", "'quote'", "")


def _varied() -> list[node_pb2.UsageRecord]:
    out = [
        record(request_id="req-b", client_request_id="ok-1", error_code="rate_limit_exceeded",
               deployment="eu-1", upstream_attempts=2, requested_model="big", batch_id="batch_1"),
        record(request_id="req-a", client_request_id="has space", error_code="x" * 65,
               deployment="Bad Name", upstream_attempts=101, requested_model="two words", batch_id="b" * 129),
        record(request_id="req-c", client_request_id="c" * 128, deployment="d" * 65, requested_model="m\x01",
               node_id="own-node", streamed=True, flags=5, attempt=3, audio_milliseconds=1500,
               input_characters=12),
        record(request_id="req-a", input_tokens=999),  # a second copy: the first one is kept
        record(request_id="req-d", when=T0 + timedelta(hours=5, microseconds=7)),
    ]  # fmt: skip
    out[4].time.nanos = 123_456_789  # truncated to microseconds, as Timestamp.ToDatetime does
    return out


def _slow(records: list[node_pb2.UsageRecord]) -> tuple[columns.Columns, int]:
    unique: dict[str, object] = {}
    for r in records:
        p = prepare(r, "batch-node", RECEIVED)
        unique.setdefault(p.values["request_id"], p)
    rows = [unique[k] for k in sorted(unique)]
    return columns.from_prepared(rows), len(records) - len(rows)  # type: ignore[arg-type]


def test_the_batch_attempt_stands_in_for_records_without_their_own() -> None:
    """Nodes ship records encoded once, with attempt 0, and count sends on the batch instead."""
    records = _varied()  # req-c carries its own attempt (3); the others none
    fast = columns.from_batch(records, "batch-node", RECEIVED, 2)
    assert fast is not None
    by_id = dict(zip(fast[0].values["request_id"], fast[0].values["attempt"], strict=True))
    assert by_id == {"req-a": 2, "req-b": 2, "req-c": 3, "req-d": 2}
    slow = [prepare(r, "batch-node", RECEIVED, 2).values for r in records]
    assert {v["request_id"]: v["attempt"] for v in slow} == by_id
    assert prepare(records[0], "n", RECEIVED).values["attempt"] == 0  # no batch attempt: as before


def test_fast_path_stores_exactly_what_prepare_would() -> None:
    records = _varied()
    fast = columns.from_batch(records, "batch-node", RECEIVED)
    assert fast is not None
    slow_rows, slow_duplicates = _slow(records)
    assert fast[1] == slow_duplicates == 1
    assert fast[0].values == slow_rows.values
    assert fast[0].hours == slow_rows.hours
    assert fast[0].values["request_id"] == ["req-a", "req-b", "req-c", "req-d"]
    assert fast[0].values["input_tokens"][0] == 10, "the first copy of req-a"
    v = fast[0].values
    assert v["requested_model"] == [None, "big", None, None]
    assert v["client_request_id"] == [None, "ok-1", "c" * 128, None]
    assert v["node_id"] == ["batch-node", "batch-node", "own-node", "batch-node"]
    assert v["time"][3] % 1_000_000 == 123_456


@pytest.mark.parametrize(
    "bad",
    [
        {"request_id": ""}, {"org_id": ""}, {"input_tokens": -1}, {"cost_picos": 2**60},
        {"model_name": "m\x00"}, {"request_id": "r" * 129}, {"node_id": "n" * 129},
        {"http_status": 70000}, {"attempt": 2**31}, {"no_time": True}, {"nanos": 1_000_000_000},
        {"seconds": -1},
    ],
)  # fmt: skip
def test_any_bad_record_sends_the_batch_to_the_slow_path(bad: dict[str, object]) -> None:
    victim = record(request_id="req-bad")
    for name, value in bad.items():
        if name == "no_time":
            victim.ClearField("time")
        elif name in ("nanos", "seconds"):
            setattr(victim.time, name, value)
        else:
            setattr(victim, name, value)
    with pytest.raises(BadRecord):
        prepare(victim, "n", RECEIVED)
    assert columns.from_batch([record(), victim, record()], "n", RECEIVED) is None
    assert columns.from_batch([record(), record()], "n", RECEIVED) is not None


async def test_awkward_strings_and_times_round_trip(sessions: Sessions) -> None:
    sent = []
    for i, text in enumerate(AWKWARD):
        r = record(request_id=f"req-awk-{i}", model=text or "m", key_id=text, upstream_slug=text,
                   endpoint=text, when=T0 + timedelta(seconds=i, microseconds=999_999 - i))  # fmt: skip
        sent.append(r)
    ack = await ingest_batch(sessions, batch(sent))
    assert (ack.accepted, ack.rejected) == (len(AWKWARD), 0)
    async with sessions() as s:
        for i, text in enumerate(AWKWARD):
            row = await s.get(UsageRecordRow, f"req-awk-{i}")
            assert row is not None
            assert (row.model_name, row.key_id, row.upstream_slug, row.endpoint) == (
                text or "m",
                text,
                text,
                text,
            )
            assert row.time == T0 + timedelta(seconds=i, microseconds=999_999 - i)
            assert row.client_request_id is None and row.deployment is None
    rolled, recomputed = await rollups_match_records(sessions)
    assert rolled == recomputed and len(rolled) == len(AWKWARD)
