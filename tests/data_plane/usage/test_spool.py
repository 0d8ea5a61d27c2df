"""The on-disk spool: framing, adoption of unowned segments, corrupt and torn entries, failing
writes (through the ``Disk`` seam: short writes, ENOSPC, EROFS, failing fdatasync), acks, and the
full policies."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_plane.usage.frames import HEADER_SIZE
from data_plane.usage.spool import SUFFIX, Entry, Spool
from odock.v1 import node_pb2
from tests.data_plane.usage.faults import FaultyDisk


def batch(first: int, n: int = 3) -> tuple[bytes, int]:
    payload = node_pb2.UsageBatch(
        node_id="n1",
        records=[
            node_pb2.UsageRecord(request_id=f"req_{first + i}", org_id="org_1", input_tokens=first + i)
            for i in range(n)
        ],
    ).SerializeToString()
    return payload, n


def stored(spool: Spool, groups: list[tuple[bytes, int]]) -> list[Entry]:
    """Append and let go (as the journal does once a batch is old): the entries are pending."""
    entries, why = spool.append(groups)
    assert None not in entries, why
    done = [e for e in entries if e is not None]
    spool.release(done)
    return done


def ids(spool: Spool) -> list[str]:
    return [r.request_id for _, b in spool.take(10**6) for r in b.records]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob(f"*{SUFFIX}"))


def test_segments_are_locked_by_their_writer_and_adopted_after(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    stored(a, [batch(0), batch(3)])
    stored(a, [batch(6)])
    b = Spool(tmp_path, 1 << 20, "drop_newest")
    b.open()
    assert b.pending_entries == 0  # a holds the lock
    a.close()  # e.g. a worker that exited; files stay
    assert b.adopt() == 3
    assert (b.pending_entries, b.held_records) == (3, 9)
    taken = b.take(10**6)
    assert [r.request_id for _, x in taken for r in x.records] == [f"req_{i}" for i in range(9)]
    b.ack([e for e, _ in taken])
    assert segments(tmp_path) == [] and b.held_batches == 0
    b.close()


def test_take_is_bounded_and_released_entries_come_back(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20, "drop_newest")
    s.open()
    stored(s, [batch(0), batch(3), batch(6)])
    first = s.take(4)  # whole entries: 3 records, a second entry would exceed 4
    assert [e.records for e, _ in first] == [3] and s.pending_entries == 2
    s.release([e for e, _ in first])
    assert ids(s) == [f"req_{i}" for i in range(9)]
    s.close()


def test_a_torn_tail_is_skipped_and_its_records_counted(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    stored(a, [batch(0), batch(3)])
    a.close()
    [seg] = segments(tmp_path)
    whole = seg.read_bytes()
    with seg.open("ab") as f:
        f.write(whole[: len(whole) // 2 - 5])  # a third entry, cut short (its header is whole)
    b = Spool(tmp_path, 1 << 20, "drop_newest")
    b.open()
    assert ids(b) == [f"req_{i}" for i in range(6)]
    assert (b.corrupt_entries, b.dropped["corrupt"]) == (1, 3)
    b.close()


def test_a_corrupt_entry_in_the_middle_is_skipped_and_the_rest_delivered(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    entries = stored(a, [batch(0), batch(3, n=4), batch(7), batch(10)])
    a.close()
    [seg] = segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[entries[1].offset + 5] ^= 0xFF  # a flipped bit in the second payload
    data[entries[2].offset - HEADER_SIZE + 6] ^= 0xFF  # and in the third entry's header
    seg.write_bytes(bytes(data))
    b = Spool(tmp_path, 1 << 20, "drop_newest")
    b.open()
    assert ids(b) == ["req_0", "req_1", "req_2", "req_10", "req_11", "req_12"]
    assert b.corrupt_entries == 2
    assert b.dropped["corrupt"] == 4  # the payload's header said 4; the bad header's count is unknown
    b.close()


def test_an_entry_corrupted_after_writing_is_skipped_when_read(tmp_path: Path) -> None:
    s = Spool(tmp_path, 1 << 20, "drop_newest")
    s.open()
    entries = stored(s, [batch(0), batch(3)])
    [seg] = segments(tmp_path)
    fd = os.open(seg, os.O_WRONLY)
    os.pwrite(fd, b"\x00\x01\x02", entries[0].offset)
    os.close(fd)
    assert ids(s) == ["req_3", "req_4", "req_5"]
    assert (s.dropped["corrupt"], s.errors["corrupt"]) == (3, 1)
    s.close()


def test_older_oub1_segments_are_still_read(tmp_path: Path) -> None:
    import struct
    import zlib

    payload, _ = batch(0)
    legacy = struct.pack(">4sII", b"OUB1", len(payload), zlib.crc32(payload)) + payload
    (tmp_path / f"{1:020d}-1-000001{SUFFIX}").write_bytes(legacy * 2)
    s = Spool(tmp_path, 1 << 20, "drop_newest")
    s.open()
    assert ids(s) == ["req_0", "req_1", "req_2"] * 2
    s.close()


def test_a_short_write_leaves_no_entry_behind(tmp_path: Path) -> None:
    disk = FaultyDisk(capacity=len(batch(0)[0]) + HEADER_SIZE + 10)  # room for one entry and a bit
    s = Spool(tmp_path, 1 << 20, "drop_newest", disk=disk)
    s.open()
    entries, why = s.append([batch(0), batch(3), batch(6)])
    assert entries[0] is not None and entries[1:] == [None, None] and why == "short_write"
    assert s.errors["short_write"] == 1 and s.held_records == 3
    entries, why = s.append([batch(9)])  # the 10 bytes left (given back by the cut) are not enough
    assert entries == [None] and why == "short_write"
    disk.capacity = 0
    entries, why = s.append([batch(9)])
    assert entries == [None] and why == "ENOSPC"
    s.release([e for e in [*entries] if e is not None])
    s.close()
    # What is on disk reads back cleanly: the partial frame was cut off.
    disk.capacity = 1 << 20
    t = Spool(tmp_path, 1 << 20, "drop_newest")
    t.open()
    assert ids(t) == ["req_0", "req_1", "req_2"] and t.corrupt_entries == 0
    t.close()


def test_a_read_only_disk_refuses_without_raising(tmp_path: Path) -> None:
    disk = FaultyDisk(fail_with=errno.EROFS)
    s = Spool(tmp_path, 1 << 20, "drop_newest", disk=disk)
    s.open()
    entries, why = s.append([batch(0)])
    assert entries == [None] and why == "EROFS" and s.errors["EROFS"] == 1
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary file left
    disk.fail_with = 0  # writable again: the next append works
    entries, _ = s.append([batch(3)])
    assert entries[0] is not None
    s.close()


def test_a_failed_fdatasync_makes_the_group_not_durable(tmp_path: Path) -> None:
    disk = FaultyDisk(fail_sync_with=errno.EIO)
    s = Spool(tmp_path, 1 << 20, "drop_newest", disk=disk)
    s.open()
    entries, why = s.append([batch(0), batch(3)])
    assert entries == [None, None] and why == "EIO" and s.held_records == 0
    disk.fail_sync_with = 0
    entries, _ = s.append([batch(6)])
    assert entries[0] is not None and entries[0].segment.path.name != ""  # a fresh segment
    s.close()


def test_full_drop_newest_refuses_and_the_caller_is_told(tmp_path: Path) -> None:
    one = len(batch(0)[0]) + HEADER_SIZE
    s = Spool(tmp_path, one * 2 + 4, "drop_newest", segment_bytes=1 << 20)
    s.open()
    entries, why = s.append([batch(0), batch(3), batch(6)])
    assert [e is not None for e in entries] == [True, True, False] and why == "spool_full"
    s.release([e for e in entries if e is not None])
    assert ids(s) == [f"req_{i}" for i in range(6)]
    s.close()


def test_full_drop_newest_takes_nothing_newer_until_room_is_freed(tmp_path: Path) -> None:
    """Once an entry is refused, a smaller newer one does not slip into the room left: the spool
    stays first-come (timing decides how records are grouped, so it must not decide what is kept)."""
    one = len(batch(0, 3)[0]) + HEADER_SIZE
    small = len(batch(0, 1)[0]) + HEADER_SIZE
    s = Spool(tmp_path, one + small + 4, "drop_newest", segment_bytes=one)  # one entry per segment
    s.open()
    entries, why = s.append([batch(0, 3), batch(3, 3), batch(6, 1)])
    assert [e is not None for e in entries] == [True, False, False] and why == "spool_full"
    assert s.append([batch(7, 1)]) == ([None], "spool_full")  # a later call too
    s.release([e for e in entries if e is not None])
    s.ack([e for e, _ in s.take(10**6)])  # the control plane acknowledged: the segment is deleted
    assert segments(tmp_path) == []
    entries, why = s.append([batch(8, 1)])
    assert entries[0] is not None and why == ""
    s.close()


def test_full_drop_oldest_deletes_old_segments_and_counts(tmp_path: Path) -> None:
    one = len(batch(0)[0]) + HEADER_SIZE
    s = Spool(tmp_path, one * 2 + 4, "drop_oldest", segment_bytes=one)  # one batch per segment
    s.open()
    for first in (0, 3, 6):
        stored(s, [batch(first)])
    assert ids(s) == [f"req_{i}" for i in range(3, 9)]
    assert (s.dropped["spool_full"], s.dropped_batches) == (3, 1)
    assert len(segments(tmp_path)) == 2
    s.close()


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 40))
def test_a_segment_goes_exactly_when_its_last_entry_is_acked(tmp_path_factory: pytest.TempPathFactory,
                                                               rng: random.Random, count: int) -> None:  # fmt: skip
    spool = Spool(tmp_path_factory.mktemp("spool"), 1 << 20, "drop_newest", segment_bytes=512)
    spool.open()
    entries = [e for g in range(count) for e in stored(spool, [batch(3 * g)])]
    assert len({e.segment.path for e in entries}) > 1 or count < 8  # several segments once there are enough
    rng.shuffle(entries)
    for n, entry in enumerate(entries):
        spool.ack([entry, entry])  # an entry acked twice counts once
        left = entries[n + 1 :]
        assert entry.segment.path.exists() == any(e.segment is entry.segment for e in left)
    assert (spool.held_batches, spool.held_records) == (0, 0)
    spool.close()


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "take", "release", "ack"]), st.integers(1, 7)), max_size=40))
def test_take_returns_the_oldest_pending_entries_whatever_came_before(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int]]
) -> None:
    """take() starts each segment at a cursor, not its first entry: what it returns is still the
    oldest pending entries in order (as a walk from the start finds them), after any mix of
    appends, takes, releases of taken entries and acks."""
    spool = Spool(tmp_path_factory.mktemp("spool"), 1 << 20, "drop_newest", segment_bytes=512)
    spool.open()
    written: list[Entry] = []
    taken: list[Entry] = []
    first = 0
    for op, n in steps:
        if op == "append":
            written += stored(spool, [batch(first + 3 * i) for i in range(n)])
            first += 3 * n
        elif op == "take":
            pending = [e for e in written if not e.acked and not e.claimed]
            want: list[Entry] = []
            for e in pending:  # whole entries, at least one, up to n records
                if want and 3 * (len(want) + 1) > n:
                    break
                want.append(e)
            got = [e for e, _ in spool.take(n)]
            assert got == want
            taken += got
        elif op == "release" and taken:
            back, taken = taken[-n:], taken[:-n]  # the newest taken first: behind the cursor
            spool.release(back)
        elif op == "ack" and taken:
            done, taken = taken[:n], taken[n:]
            spool.ack(done)
    pending = [e for e in written if not e.acked and not e.claimed]
    assert [e for e, _ in spool.take(10**6)] == pending
    spool.close()
