"""The on-disk spool: framing, adoption of unowned segments, torn tails, acks, and the full policies."""

from __future__ import annotations

from pathlib import Path

from odock.v1 import node_pb2

from data_plane.usage.spool import SUFFIX, Spool


def batch(first: int, n: int = 3) -> node_pb2.UsageBatch:
    return node_pb2.UsageBatch(
        node_id="n1",
        records=[
            node_pb2.UsageRecord(request_id=f"req_{first + i}", org_id="org_1", input_tokens=first + i)
            for i in range(n)
        ],
    )


def ids(spool: Spool) -> list[str]:
    out = []
    for entry in spool.pending():
        got = spool.read(entry)
        assert got is not None
        out += [r.request_id for r in got.records]
    return out


def segments(path: Path) -> list[Path]:
    return sorted(path.glob(f"*{SUFFIX}"))


def test_segments_are_locked_by_their_writer_and_adopted_after(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    assert a.append([batch(0), batch(3)]) == 2
    assert a.append([batch(6)]) == 1
    b = Spool(tmp_path, 1 << 20, "drop_newest")
    b.open()
    assert b.pending() == []  # a holds the lock
    a.close()  # e.g. a worker that exited; files stay
    assert b.adopt() == 3
    assert ids(b) == [f"req_{i}" for i in range(9)]
    for entry in b.pending():
        b.ack(entry)
    assert segments(tmp_path) == [] and b.held_batches() == 0
    b.close()


def test_a_torn_tail_is_cut_off_and_counted(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    a.append([batch(0), batch(3)])
    a.close()
    [seg] = segments(tmp_path)
    whole = seg.read_bytes()
    with seg.open("ab") as f:
        f.write(whole[: len(whole) // 2 - 5])  # a third entry, cut short
    b = Spool(tmp_path, 1 << 20, "drop_newest")
    b.open()
    assert ids(b) == [f"req_{i}" for i in range(6)] and b.torn_entries == 1
    assert seg.stat().st_size == len(whole)
    b.close()


def test_acked_entries_are_not_replayed_while_the_segment_lives(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20, "drop_newest")
    a.open()
    a.append([batch(0), batch(3)])
    first = a.pending()[0]
    a.ack(first)
    assert ids(a) == ["req_3", "req_4", "req_5"] and a.held_records() == 3
    a.close()


def test_full_drop_newest_refuses_and_counts(tmp_path: Path) -> None:
    one = len(batch(0).SerializeToString()) + 12
    s = Spool(tmp_path, one * 2 + 4, "drop_newest", segment_bytes=1 << 20)
    s.open()
    assert s.append([batch(0), batch(3), batch(6)]) == 2
    assert s.append([batch(9, n=5)]) == 0
    assert (s.dropped_records, s.dropped_batches) == (8, 2)
    assert ids(s) == [f"req_{i}" for i in range(6)]
    s.close()


def test_full_drop_oldest_deletes_old_segments_and_counts(tmp_path: Path) -> None:
    one = len(batch(0).SerializeToString()) + 12
    s = Spool(tmp_path, one * 2 + 4, "drop_oldest", segment_bytes=one)  # one batch per segment
    s.open()
    assert s.append([batch(0), batch(3), batch(6)]) == 3
    assert ids(s) == [f"req_{i}" for i in range(3, 9)]
    assert (s.dropped_records, s.dropped_batches) == (3, 1)
    assert len(segments(tmp_path)) == 2
    s.close()
