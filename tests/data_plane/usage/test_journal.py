"""The journal in one process, on a real spool directory whose disk fails through the ``Disk``
seam: records stay in memory while the disk refuses them, memory stays bounded (the full policy
drops the excess, counted and logged), and supervised tasks survive their own failures."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from data_plane.settings import FullPolicy, UsageSettings
from data_plane.usage.spool import Spool
from data_plane.usage.supervisor import supervise
from data_plane.usage.wal import Journal
from odock.v1 import node_pb2
from tests.data_plane.usage.faults import FaultyDisk

pytestmark = pytest.mark.asyncio


def journal(tmp_path: Path, disk: FaultyDisk, policy: FullPolicy = "drop_newest", memory_max: int = 50) -> Journal:
    settings = UsageSettings(
        spool_dir=tmp_path, spool_full_policy=policy, batch_size=20, batch_age=0.0, spill_after=0.0,
        memory_max=memory_max,
    )  # fmt: skip
    spool = Spool(tmp_path, 1 << 20, "drop_oldest" if policy == "drop_oldest" else "drop_newest", disk=disk)
    spool.open()
    j = Journal(settings, "n1", spool)
    j.spool_ok = True
    return j


async def fill(j: Journal, count: int, first: int = 0) -> None:
    """``count`` records in commits of 10, each followed by housekeeping (seal, spill)."""
    for i in range(first, first + count):
        j.submit(node_pb2.UsageRecord(request_id=f"req_{i:06d}", org_id="org_1"))
        if i % 10 == 9:
            await j.commit()
            j.seal()
            await j.spill(time.monotonic() + 10)


def memory_ids(j: Journal) -> list[str]:
    return [r.request_id for b in j.memory for r in b.records()]


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_a_refusing_disk_keeps_memory_bounded_and_counts_every_drop(
    tmp_path: Path, policy: FullPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    j = journal(tmp_path, FaultyDisk(fail_with=errno.EROFS), policy)
    with caplog.at_level(logging.WARNING, "odock.data_plane.usage"):
        await fill(j, 500)
    assert j.queued() == 50 and j.dropped == Counter({"disk_error": 450})
    assert j.not_durable == 500 and j.spool.errors["EROFS"] > 0
    kept = list(range(50)) if policy == "drop_newest" else list(range(450, 500))
    assert memory_ids(j) == [f"req_{i:06d}" for i in kept]
    # A flood of drops is one WARNING at once, then one line a second with the sum: never silent.
    j.log_drops()
    lines = [r.getMessage() for r in caplog.records if "records dropped (disk_error)" in r.getMessage()]
    assert len(lines) == 2 and sum(int(line.split()[1]) for line in lines) == 450
    j.spool.close()


async def test_records_refused_by_the_disk_are_written_once_it_recovers(tmp_path: Path) -> None:
    disk = FaultyDisk(capacity=0)  # full
    j = journal(tmp_path, disk)
    await fill(j, 30)
    assert j.queued() == 30 and j.spool.held_records == 0 and j.spool.errors["ENOSPC"] > 0
    disk.capacity = 1 << 20  # room again: the next spill writes them and lets go of them
    await j.spill(time.monotonic() + 10, everything=True)
    assert j.queued() == 0 and j.spool.held_records == 30 and not j.dropped
    got = await j.take(20)  # whole entries (chunks of 10), up to 20 records
    assert got is not None and [r.request_id for r in got.records()] == [f"req_{i:06d}" for i in range(20)]
    j.spool.close()


async def test_batches_a_spill_puts_back_wake_the_stream(tmp_path: Path) -> None:
    """The stream side may look for work while a spill has the batches out (writing them in a
    thread): it finds none and waits for the wake, so putting them back must wake it, or records
    sit in memory until new traffic comes (found as a flaky read-only-disk delivery test)."""
    j = journal(tmp_path, FaultyDisk(fail_with=errno.EROFS))
    await fill(j, 10)  # one sealed batch, kept in memory (the disk refused it)
    spilling = asyncio.create_task(j.spill(time.monotonic() + 10, everything=True))
    await asyncio.sleep(0)  # the spill has taken the batch and waits for the disk
    j.wake.clear()
    assert not j.has_work()  # what the stream side sees now: it waits for the wake
    await spilling
    assert j.has_work() and j.wake.is_set()
    j.spool.close()


async def test_shutdown_counts_what_the_disk_would_not_take(tmp_path: Path) -> None:
    j = journal(tmp_path, FaultyDisk(fail_with=errno.EIO), memory_max=1000)
    await fill(j, 25)  # 20 committed and spilled (refused), 5 waiting for a commit
    j.closed = True
    await j.shutdown()
    assert j.dropped == Counter({"shutdown": 25})
    j.submit(node_pb2.UsageRecord(request_id="late"))
    assert j.dropped["shutdown"] == 26


async def test_a_failing_task_is_restarted_with_backoff(caplog: pytest.LogCaptureFixture) -> None:
    runs: list[float] = []

    async def flaky() -> None:
        runs.append(time.monotonic())
        if len(runs) <= 3:
            raise OSError(errno.EROFS, "Read-only file system")

    restarts: Counter[str] = Counter()
    with caplog.at_level(logging.ERROR, "odock.data_plane.usage"):
        await asyncio.wait_for(supervise("usage test", flaky, restarts, first=0.01, cap=0.04), 5)
    assert len(runs) == 4 and restarts == Counter({"usage test": 3})
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.01 and gaps[1] >= 0.02 and gaps[2] >= 0.04  # doubling, capped
    assert "usage test failed (OSError" in caplog.text and "Traceback" not in caplog.text


async def test_records_whose_segment_drop_oldest_deleted_before_a_spill_count_as_spool_full(
    tmp_path: Path,
) -> None:
    """Under load a sealed batch can still be in memory when drop_oldest deletes its segment: when
    the memory bound then drops its records, the reason is the full spool, not a disk error."""
    settings = UsageSettings(
        spool_dir=tmp_path, spool_full_policy="drop_oldest", batch_size=20, batch_age=0.0, spill_after=60.0,
        memory_max=5,
    )  # fmt: skip
    spool = Spool(tmp_path, 1 << 20, "drop_oldest", disk=FaultyDisk())
    spool.open()
    j = Journal(settings, "n1", spool)
    j.spool_ok = True
    for i in range(20):
        j.submit(node_pb2.UsageRecord(request_id=f"req_{i:06d}", org_id="org_1"))
    await j.commit()
    j.seal()  # sealed, not spilled: the batch holds its chunk, whose entry is on disk
    assert len(j.memory) == 1 and j.memory[0].durable()
    with j.spool._lock:  # the size bound deleting this segment, as _make_room does
        j.spool._delete(j.memory[0].chunks[0].entry.segment)  # type: ignore[union-attr]
    await j.spill(time.monotonic())  # well within spill_after: the batch stays, only the bound applies
    assert j.dropped == Counter({"spool_full": 15}) and j.queued() == 5
    j.spool.close()


async def test_durable_waits_for_the_next_commit_and_says_whether_the_spool_took_it(tmp_path: Path) -> None:
    disk = FaultyDisk()
    j = journal(tmp_path, disk)
    j.submit(node_pb2.UsageRecord(request_id="req_a", org_id="org_1"))
    waiter = asyncio.ensure_future(j.durable(5.0))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # nothing committed yet
    await j.commit()
    assert await waiter is True
    assert j.spool.held_records == 1
    disk.fail_with = errno.EIO
    j.submit(node_pb2.UsageRecord(request_id="req_b", org_id="org_1"))
    waiter = asyncio.ensure_future(j.durable(5.0))
    await asyncio.sleep(0)
    await j.commit()
    assert await waiter is False  # kept in memory until delivered, but not in the spool
    waiter = asyncio.ensure_future(j.durable(5.0))
    await asyncio.sleep(0)
    await j.commit()  # nothing new: says what the last commit that wrote did
    assert await waiter is False
    assert await j.durable(0.05) is False  # no commit comes
    disk.fail_with = 0

    async def broken(groups: object) -> object:
        raise RuntimeError("a bug in the commit")

    j._write = broken  # type: ignore[method-assign, assignment]
    j.submit(node_pb2.UsageRecord(request_id="req_c", org_id="org_1"))
    waiter = asyncio.ensure_future(j.durable(5.0))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await j.commit()
    assert await asyncio.wait_for(waiter, 0.5) is False  # answered at once, not after the timeout
    j.closed = True
    assert await j.durable(5.0) is False


class _HeldDisk(FaultyDisk):
    """A disk whose writes wait until the test lets them go (a commit or spill caught mid-write)."""

    def __init__(self, capacity: int = 1 << 62) -> None:
        super().__init__(capacity=capacity)
        self.entered = threading.Event()
        self.go = threading.Event()

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:  # type: ignore[override]
        self.entered.set()
        self.go.wait(5)
        return super().pwrite(fd, data, offset)


async def test_records_a_commit_or_spill_is_writing_are_still_counted_as_queued(tmp_path: Path) -> None:
    """/readyz adds queued, spooled and dropped records: one that a commit or a spill holds while
    the disk works must show in one of them, or a settled-looking sum hides a record (found as a
    flaky full-spool test that read 25 kept + 45 dropped of 60)."""
    disk = _HeldDisk()
    j = journal(tmp_path, disk)
    for i in range(7):
        j.submit(node_pb2.UsageRecord(request_id=f"req_{i}", org_id="org_1"))
    committing = asyncio.create_task(j.commit())
    assert await asyncio.to_thread(disk.entered.wait, 5)
    assert j.queued() == 7 and j.spool.held_records == 0  # in the commit's hands
    disk.go.set()
    await committing
    assert j.queued() == 7 and j.spool.held_records == 7  # in memory and on disk until spilled
    j.seal()
    await j.spill(time.monotonic() + 10)
    assert j.queued() == 0 and j.spool.held_records == 7
    j.spool.close()

    refusing = _HeldDisk(capacity=0)  # a full disk
    j = journal(tmp_path / "refusing", refusing)
    for i in range(3):
        j.submit(node_pb2.UsageRecord(request_id=f"req_{i}", org_id="org_1"))
    refusing.go.set()
    await j.commit()  # refused: kept in memory
    j.seal()
    refusing.go.clear()
    refusing.entered.clear()
    spilling = asyncio.create_task(j.spill(time.monotonic() + 10, everything=True))
    assert await asyncio.to_thread(refusing.entered.wait, 5)  # the spill writes them again
    assert j.queued() == 3 and not j.memory
    refusing.go.set()
    await spilling
    assert j.queued() == 3 and j.dropped == Counter()
    j.spool.close()
