"""The on-disk usage spool: append-only segment files of framed batches, bounded in size.

Layout: ``<dir>/<time_ns>-<pid>-<n>.seg``; names sort oldest first. A segment
is created under a temporary name, locked (``flock``), then renamed, and the
process that writes or adopts a segment holds that lock until it deletes or
closes it. Any segment in the directory that can be locked belongs to nobody
(its process died, or left it at shutdown) and is adopted, so several workers
can share one directory and a restarted node replays what a dead one left.

Each entry is ``b"OUB1" | u32 length | u32 crc32 | UsageBatch bytes``. One
:meth:`Spool.append` call writes a group of batches and fsyncs once. A torn
or corrupt tail (a crash mid-write) ends the segment: what follows is cut off
and counted. Entries are never rewritten: an acknowledged entry is only
forgotten in memory, and a segment is deleted once all of its entries are
acknowledged; a crash in between replays some acknowledged batches, which the
control plane recognises by request id and ignores.

When an append would exceed ``max_bytes`` the policy decides: ``drop_newest``
refuses the new batches, ``drop_oldest`` deletes this process's oldest
segments to make room. Either way the lost records are counted
(``dropped_records``) and logged, never silent.

Every method does blocking file I/O: the shipper calls them off the event loop,
one at a time.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.usage")

FullPolicy = Literal["drop_newest", "drop_oldest"]
FULL_POLICIES: tuple[FullPolicy, ...] = ("drop_newest", "drop_oldest")
MAGIC = b"OUB1"
_HEADER = struct.Struct(">4sII")
SUFFIX = ".seg"
MAX_ENTRY = 256 * 1024 * 1024


@dataclass(eq=False)
class Entry:
    """One spooled batch."""

    segment: Segment
    offset: int  # of the payload
    length: int
    records: int
    acked: bool = False
    sending: bool = False


@dataclass(eq=False)
class Segment:
    """A locked segment file and its entries."""

    path: Path
    fd: int
    size: int
    entries: list[Entry] = field(default_factory=list)
    writable: bool = False
    gone: bool = False

    def unacked(self) -> list[Entry]:
        return [e for e in self.entries if not e.acked]


class Spool:
    """Batches kept on disk until the control plane acknowledges them."""

    def __init__(self, directory: Path, max_bytes: int, policy: FullPolicy, segment_bytes: int = 0) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.policy = policy
        self.segment_bytes = segment_bytes or max(512, min(4 * 1024 * 1024, max_bytes // 8))
        self._segments: list[Segment] = []  # oldest first
        self._active: Segment | None = None
        self._counter = 0
        self.dropped_records = 0
        self.dropped_batches = 0
        self.torn_entries = 0
        self.adopted_segments = 0

    # -- lifecycle --

    def open(self) -> None:
        """Create the directory and adopt whatever unowned segments it holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.adopt()

    def close(self) -> None:
        """Release every segment (files stay for whoever comes next)."""
        for seg in self._segments:
            self._close_fd(seg)
        self._segments.clear()
        self._active = None

    def adopt(self) -> int:
        """Take over unlocked segments in the directory; the number of entries gained."""
        held = {seg.path.name for seg in self._segments}
        gained = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path.name in held:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not path.exists():  # deleted by its owner between listing and locking
                os.close(fd)
                continue
            seg = self._load(path, fd)
            if not seg.entries:
                self._delete(seg)
                continue
            self._segments.append(seg)
            self.adopted_segments += 1
            gained += len(seg.entries)
            log.info("usage spool: adopted %s (%d batches)", path.name, len(seg.entries))
        self._segments.sort(key=lambda s: s.path.name)
        return gained

    # -- writing --

    def append(self, batches: list[node_pb2.UsageBatch]) -> int:
        """Write ``batches`` (one fsync for the group); the number stored (the rest were dropped)."""
        stored = 0
        for batch in batches:
            payload = batch.SerializeToString()
            frame = _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload
            if not self._make_room(len(frame), len(batch.records)):
                continue
            seg = self._writable()
            os.pwrite(seg.fd, frame, seg.size)
            seg.entries.append(Entry(seg, seg.size + _HEADER.size, len(payload), len(batch.records)))
            seg.size += len(frame)
            stored += 1
            if seg.size >= self.segment_bytes:
                self._sync(seg)
                seg.writable = False
                self._active = None
        if self._active is not None and stored:
            self._sync(self._active)
        return stored

    def _make_room(self, size: int, records: int) -> bool:
        if self.disk_bytes() + size <= self.max_bytes:
            return True
        if self.policy == "drop_oldest":
            for seg in list(self._segments):
                if self.disk_bytes() + size <= self.max_bytes:
                    break
                lost = sum(e.records for e in seg.unacked() if not e.sending)
                self._count_drop(
                    lost, len(seg.unacked()), f"spool full: dropped oldest segment {seg.path.name}"
                )
                self._delete(seg)
            if self.disk_bytes() + size <= self.max_bytes:
                return True
        self._count_drop(records, 1, "spool full: dropped the newest batch")
        return False

    def _count_drop(self, records: int, batches: int, why: str) -> None:
        if records or batches:
            self.dropped_records += records
            self.dropped_batches += batches
            log.warning("usage %s (%d records; %d dropped so far)", why, records, self.dropped_records)

    def _writable(self) -> Segment:
        if self._active is not None:
            return self._active
        self._counter += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}{SUFFIX}"
        tmp = self.directory / f".{name}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        path = self.directory / name
        os.rename(tmp, path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the new name survives a crash along with the data
        finally:
            os.close(dir_fd)
        seg = Segment(path, fd, 0, writable=True)
        self._segments.append(seg)
        self._active = seg
        return seg

    def _sync(self, seg: Segment) -> None:
        os.fsync(seg.fd)

    # -- reading and acknowledging --

    def pending(self) -> list[Entry]:
        """Entries neither acknowledged nor being sent, oldest first."""
        return [e for seg in self._segments for e in seg.entries if not e.acked and not e.sending]

    def read(self, entry: Entry) -> node_pb2.UsageBatch | None:
        """The batch of an entry (None when its segment was dropped meanwhile)."""
        if entry.segment.gone:
            return None
        batch = node_pb2.UsageBatch()
        batch.ParseFromString(os.pread(entry.segment.fd, entry.length, entry.offset))
        return batch

    def ack(self, entry: Entry) -> None:
        """The control plane stored the entry's batch; a fully acknowledged segment is deleted."""
        entry.acked = True
        entry.sending = False
        seg = entry.segment
        if not seg.gone and not seg.unacked():
            if seg is self._active:
                self._active = None
            self._delete(seg)

    # -- status --

    def disk_bytes(self) -> int:
        """Bytes of every segment in the directory (this process's and others')."""
        total = 0
        try:
            with os.scandir(self.directory) as it:
                for item in it:
                    if item.name.endswith(SUFFIX):
                        try:
                            total += item.stat().st_size
                        except FileNotFoundError:
                            continue
        except FileNotFoundError:
            return 0
        return total

    def held_records(self) -> int:
        """Records in unacknowledged entries this process holds."""
        return sum(e.records for seg in self._segments for e in seg.entries if not e.acked)

    def held_batches(self) -> int:
        """Unacknowledged entries this process holds."""
        return sum(1 for seg in self._segments for e in seg.entries if not e.acked)

    # -- internals --

    def _load(self, path: Path, fd: int) -> Segment:
        size = os.fstat(fd).st_size
        seg = Segment(path, fd, size)
        offset = 0
        while offset < size:
            header = os.pread(fd, _HEADER.size, offset)
            if len(header) < _HEADER.size:
                break
            magic, length, crc = _HEADER.unpack(header)
            if magic != MAGIC or length > MAX_ENTRY:
                break
            payload = os.pread(fd, length, offset + _HEADER.size)
            if len(payload) < length or zlib.crc32(payload) != crc:
                break
            batch = node_pb2.UsageBatch()
            try:
                batch.ParseFromString(payload)
            except Exception:  # noqa: BLE001 - a corrupt entry ends the segment like a torn one
                break
            seg.entries.append(Entry(seg, offset + _HEADER.size, length, len(batch.records)))
            offset += _HEADER.size + length
        if offset < size:
            self.torn_entries += 1
            log.warning("usage spool: %s has a torn or corrupt tail at byte %d; cut off", path.name, offset)
            os.ftruncate(fd, offset)
            seg.size = offset
        return seg

    def _delete(self, seg: Segment) -> None:
        seg.gone = True
        try:
            seg.path.unlink()
        except FileNotFoundError:
            pass
        self._close_fd(seg)
        if seg in self._segments:
            self._segments.remove(seg)
        if seg is self._active:
            self._active = None

    @staticmethod
    def _close_fd(seg: Segment) -> None:
        if seg.fd >= 0:
            os.close(seg.fd)  # releases the lock
            seg.fd = -1
