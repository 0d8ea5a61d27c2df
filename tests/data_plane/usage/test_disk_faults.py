"""Usage is never lost silently when the spool's disk fails: a read-only or full disk (short
writes, ENOSPC) while the control plane is down, a corrupt segment found at start, and SIGTERM
with a failing disk. Every record the clients saw is either stored exactly once by the control
plane or counted as dropped (status, metric, a WARNING line); the node keeps serving and exits
cleanly. The disk fails through ``tests.data_plane.usage.faults`` (the spool's ``Disk`` seam) in a real
data-plane process."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import pytest

from data_plane.usage.frames import scan
from tests.data_plane.usage.stack import (
    Stack,
    UsageQueries,
    assert_exactly,
    cached_then_down,
    metric,
    provision_priced,
    start_faulty_dp,
    traffic,
    usage_status,
    wait_usage,
)
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.usefixtures("fresh_fake"),
]

DROPPED = "odock_dp_usage_dropped_records_total"


async def _stored(stack: Stack, org: Provisioned, ids: list[str], expected: int) -> list[str]:
    """Wait for ``expected`` records of the org, then the ids among ``ids`` the control plane holds."""
    queries = UsageQueries(stack.cp)
    try:
        await queries.wait_requests(org.org.id, expected)
        await asyncio.sleep(0.5)  # late duplicates would show up now
        assert (await queries.totals(org.org.id)).requests == expected
        return [rid for rid in ids if await queries.find(rid) is not None]
    finally:
        await queries.close()


async def test_read_only_spool_with_control_plane_down_delivers_or_counts_every_record(
    stack: Stack, fake: FakeProvider, tmp_path: Path
) -> None:
    control = tmp_path / "disk"
    org = await provision_priced(stack.cp, fake)
    # Memory may hold 20 records the spool refused: the rest must be dropped, and counted.
    dp = start_faulty_dp(stack.cp, stack.spool, control, ODOCK_USAGE_MEMORY_MAX_RECORDS="20")
    try:
        first = await cached_then_down(stack, dp, org)
        control.write_text("rofs")
        ids: list[str] = []
        for _ in range(5):  # in rounds, so the spool is tried (and refuses) again and again
            ids += await traffic(dp, org, 10)
            await asyncio.sleep(0.3)
        ids += await traffic(dp, org, 1)  # the 51st record
        status = await wait_usage(dp, lambda s: s["queued_records"] + s["dropped_records"] >= 51)
        await asyncio.sleep(0.5)
        status = usage_status(dp)
        assert status["dropped"].get("disk_error", 0) == status["dropped_records"] == 51 - 20
        assert status["queued_records"] == 20 and status["spool_errors"].get("EROFS", 0) > 0
        assert status["task_restarts"] == {}
        await asyncio.sleep(1.2)  # a metrics refresh
        assert metric(dp, DROPPED, reason="disk_error") == 31
        log = dp.stderr_text()
        assert re.search(r"WARNING odock.data_plane.usage: usage: \d+ records dropped \(disk_error\)", log), (
            log[-3000:]
        )
        stack.restart_cp()
        stored = await _stored(stack, org, first + ids, 1 + 20)
        # drop_newest (the default): the oldest records the memory held are the ones delivered
        assert stored == first + ids[:20]
    finally:
        assert dp.stop() == 0
    assert "Traceback" not in dp.stderr_text()


async def test_full_disk_short_writes_do_not_stop_the_sender(
    stack: Stack, fake: FakeProvider, tmp_path: Path
) -> None:
    control = tmp_path / "disk"
    org = await provision_priced(stack.cp, fake)
    dp = start_faulty_dp(stack.cp, stack.spool, control)
    try:
        ids = await cached_then_down(stack, dp, org)
        control.write_text("full 3000")  # a few entries fit, then short writes (each cut back)
        for _ in range(3):
            ids += await traffic(dp, org, 20)
            await asyncio.sleep(0.3)
        control.write_text("full 0")  # then not a byte: ENOSPC
        for _ in range(3):
            ids += await traffic(dp, org, 20)
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # the commits, spills and stream retries of a node on a full disk
        stack.restart_cp()
        await assert_exactly(stack, org, ids)  # every record: from the spool and from memory
        status = usage_status(dp)
        assert (
            status["spool_errors"].get("short_write", 0) > 0 and status["spool_errors"].get("ENOSPC", 0) > 0
        )
        assert status["not_durable_records"] > 0 and status["spooled_records"] == 0
        assert status["dropped_records"] == 0 and status["task_restarts"] == {}
        # The disk has room again: records are durable again, and the sender still runs.
        control.write_text("")
        ids += await traffic(dp, org, 5)
        await assert_exactly(stack, org, ids)
    finally:
        assert dp.stop() == 0
    assert "Traceback" not in dp.stderr_text()


async def test_corrupt_segment_at_start_is_skipped_counted_and_the_rest_delivered(
    stack: Stack, fake: FakeProvider
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    ids = await cached_then_down(stack, dp, org)
    for _ in range(4):  # four separate commits: four entries
        ids += await traffic(dp, org, 5)
        await asyncio.sleep(0.2)
    await wait_usage(dp, lambda s: s["spooled_records"] == 20)
    dp.kill()
    [segment] = list(stack.spool.glob("*.seg"))
    data = bytearray(segment.read_bytes())
    entries = scan(bytes(data)).entries
    assert sum(e.records for e in entries) == 20 and len(entries) >= 4
    victim = entries[len(entries) // 2]
    data[victim.offset + victim.length // 2] ^= 0x01  # one flipped bit in a payload in the middle
    segment.write_bytes(bytes(data))
    stack.restart_cp()
    successor = stack.dp()
    try:
        status = await wait_usage(successor, lambda s: s["spooled_batches"] == 0)
        lost = status["dropped"]["corrupt"]
        assert status["corrupt_spool_entries"] == 1 and lost == victim.records
        stored = await _stored(stack, org, ids, len(ids) - lost)
        assert len(stored) == len(ids) - lost
        await asyncio.sleep(1.2)
        assert metric(successor, DROPPED, reason="corrupt") == lost
        assert "corrupt or torn entry" in successor.stderr_text()
    finally:
        assert successor.stop() == 0


async def test_sigterm_with_a_failing_disk_exits_cleanly_and_counts(
    stack: Stack, fake: FakeProvider, tmp_path: Path
) -> None:
    control = tmp_path / "disk"
    org = await provision_priced(stack.cp, fake)
    dp = start_faulty_dp(stack.cp, stack.spool, control)
    await cached_then_down(stack, dp, org)
    control.write_text("rofs")
    await traffic(dp, org, 12)
    await wait_usage(dp, lambda s: s["queued_records"] == 12)
    assert await asyncio.to_thread(dp.stop, signal.SIGTERM) == 0
    log = dp.stderr_text()
    assert "Traceback" not in log, log[-3000:]
    assert "usage: 12 records dropped (shutdown)" in log, log[-3000:]
