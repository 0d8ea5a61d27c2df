"""Records built after the responses: the journal takes closed meters and builds their records
together once per loop iteration (issue 16). Nothing may be lost or changed by the wait: what a
record says is fixed when its meter closes, a commit includes every meter closed before it, and a
shipper closing turns the meters closed before it into records, not shutdown drops."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from data_plane.settings import UsageSettings
from data_plane.usage.meter import COMPLETE, RequestMeter
from data_plane.usage.shapes import NO_USAGE
from data_plane.usage.shipper import Shipper
from data_plane.usage.spool import Spool
from data_plane.usage.tokens import Usage
from data_plane.usage.wal import Journal


def journal(tmp_path: Path) -> Journal:
    settings = UsageSettings(spool_dir=tmp_path, batch_size=50, batch_age=0.0)
    spool = Spool(tmp_path, 1 << 20, "drop_newest")
    spool.open()
    j = Journal(settings, "n1", spool)
    j.spool_ok = True
    return j


def meter(sink: object, n: int) -> RequestMeter:
    return RequestMeter(sink, request_id=f"req_{n:04d}", node_id="n1", org_id="org_1", key_id="key_1",  # type: ignore[arg-type]
                        family=1, endpoint="/v1/chat/completions", shape=NO_USAGE)  # fmt: skip


def closed(sink: object, n: int, tokens: int = 0) -> RequestMeter:
    m = meter(sink, n)
    m.report(Usage(input=tokens, output=1), final=True)
    m.settle(200, COMPLETE)
    m.close()
    return m


def committed_ids(j: Journal) -> list[str]:
    j.seal()
    return [r.request_id for b in j.memory for r in b.records()]


@pytest.mark.asyncio
async def test_the_meters_closed_in_an_iteration_become_records_in_one_callback_after_it(
    tmp_path: Path,
) -> None:
    j = journal(tmp_path)
    for n in range(5):
        closed(j, n)
    assert j.submitted == 0 and j.queued() == 5  # taken, counted as queued, not built yet
    await asyncio.sleep(0)
    assert j.submitted == 5 and j.queued() == 5
    await j.commit()
    assert committed_ids(j) == [f"req_{n:04d}" for n in range(5)]


@pytest.mark.asyncio
async def test_a_commit_includes_the_meters_closed_in_its_own_iteration(tmp_path: Path) -> None:
    j = journal(tmp_path)
    closed(j, 1)
    await j.commit()  # no iteration ended since the close
    assert committed_ids(j) == ["req_0001"]
    await asyncio.sleep(0)  # the scheduled build finds nothing left: nothing is built twice
    assert j.submitted == 1 and j.queued() == 1


def test_without_a_running_loop_the_record_is_built_at_close(tmp_path: Path) -> None:
    j = journal(tmp_path)
    closed(j, 7)
    assert j.submitted == 1


@pytest.mark.asyncio
async def test_what_a_record_says_is_fixed_when_its_meter_closes(tmp_path: Path) -> None:
    j = journal(tmp_path)
    m = closed(j, 1, tokens=10)
    m.report(Usage(input=999, output=999), final=False)  # a late report: not this record's
    m.malformed()
    m.settle(500, 0, "late")
    await asyncio.sleep(0.05)  # the build comes well after the close
    await j.commit()
    j.seal()
    (record,) = [r for b in j.memory for r in b.records()]
    assert (record.input_tokens, record.output_tokens, record.flags, record.http_status) == (10, 1, 0, 200)
    assert m.usage == Usage(input=10, output=1)  # the limits settle what the record says
    assert record.latency_us < 50_000  # it ends at the close, not at the build


@pytest.mark.asyncio
async def test_a_meter_whose_record_cannot_be_built_still_leaves_a_minimal_record(tmp_path: Path) -> None:
    j = journal(tmp_path)
    bad = closed(j, 1)
    bad.model_name = 12345  # type: ignore[assignment]  # a bug: building the full record raises
    closed(j, 2)
    await asyncio.sleep(0)
    await j.commit()
    j.seal()
    records = {r.request_id: r for b in j.memory for r in b.records()}
    assert set(records) == {"req_0001", "req_0002"}  # the other meter's record is not lost with it
    assert records["req_0001"].flags == 16  # FLAG_METER_FAILED


class NoStreams:
    def report_usage(self) -> object:
        raise ConnectionError("no control plane in this test")


@pytest.mark.asyncio
async def test_closing_the_shipper_keeps_the_meters_closed_before_it_and_counts_those_after(
    tmp_path: Path,
) -> None:
    settings = UsageSettings(spool_dir=tmp_path, flush=0.0, commit_interval=60.0)
    shipper = Shipper(NoStreams(), settings, "n1")  # type: ignore[arg-type]
    await shipper.start()
    await asyncio.sleep(0.05)  # the commit task ran its first (empty) commit and waits a minute
    for n in range(3):
        closed(shipper, n)
    await shipper.close()  # in the same iteration as the closes: before their build callback
    late = closed(shipper, 9)
    await asyncio.sleep(0)
    assert late.closed and shipper.journal.dropped == Counter({"shutdown": 1})
    spooled = Spool(tmp_path, 1 << 20, "drop_newest")
    spooled.open()
    ids = sorted(r.request_id for _, batch in spooled.take(1000) for r in batch.records)
    assert ids == [f"req_{n:04d}" for n in range(3)]


class _Broken:
    """A closed meter whose record cannot be built (a bug): the others built with it must survive."""

    def final_encoded(self) -> bytes:
        raise ValueError("boom")


@pytest.mark.asyncio
async def test_a_record_that_cannot_be_built_is_counted_and_logged_and_the_others_are_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path)
    closed(j, 1)
    j.submit_closed(_Broken())
    closed(j, 2)
    await asyncio.sleep(0)
    await j.commit()
    assert committed_ids(j) == ["req_0001", "req_0002"]
    assert j.dropped == Counter({"record_error": 1})
    assert j.queued() == 2  # the two records, now in the sealed batch; the broken one is not waiting
    assert "1 records dropped (record_error): a usage record could not be built or encoded (ValueError)" in caplog.text
    # The bug's traceback is logged, once: a second broken record adds to the count only.
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1 and "boom" in caplog.text
    j.submit_closed(_Broken())
    j.build_closed()
    assert j.dropped == Counter({"record_error": 2})
    assert len([r for r in caplog.records if r.exc_info is not None]) == 1
