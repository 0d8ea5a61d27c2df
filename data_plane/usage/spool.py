"""The on-disk usage spool and write-ahead log: append-only segment files of framed batches, bounded.

Layout: ``<dir>/<time_ns>-<pid>-<n>.seg``, oldest first by name. A process holds an ``flock`` on
each segment it writes or adopted until it deletes or closes it; a segment nobody holds (its
process died, or left it at shutdown) is adopted, so workers share one directory and a restarted
node replays what a dead one left. Entries are checksummed (``frames``): a corrupt or torn one is
skipped and its records counted. :meth:`Spool.append` writes a group of entries and
``fdatasync``s once; a short or failed write is cut back and reported, never left as an entry.
Entries are never rewritten: a segment is deleted once all of its entries are acknowledged (a
crash in between replays acknowledged batches; the control plane ignores known request ids).

An entry is *claimed* while the shipper holds its records in memory (just written, read back, or
on the stream); unclaimed unacknowledged entries are *pending* and :meth:`take` reads them back.
Past ``max_bytes``, ``drop_newest`` refuses new entries and ``drop_oldest`` deletes this
process's oldest segments (their unclaimed records counted as dropped).

Methods do blocking file I/O off the event loop, under a thread lock; the counters are plain
ints the event loop reads without it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data_plane.settings import FullPolicy
from data_plane.usage.disk import Disk, create_locked, dir_bytes, lock_unowned, why
from data_plane.usage.frames import HEADER_SIZE, frame, scan
from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.usage")

SUFFIX = ".seg"
WARN_EVERY = 10.0  # seconds between repeated warnings about the same failing disk


@dataclass(eq=False)
class Entry:
    """One spooled batch."""

    segment: Segment
    offset: int  # of the payload
    length: int
    records: int
    crc: int
    acked: bool = False
    claimed: bool = False
    forgotten: bool = False  # its write was not made durable: removed from its segment
    index: int = 0  # in its segment's ``entries``


@dataclass(eq=False)
class Segment:
    """A locked segment file and its entries."""

    path: Path
    fd: int
    size: int
    entries: list[Entry] = field(default_factory=list)
    pending: int = 0
    # Entries not acknowledged yet: the segment is deleted when the last one is (a count, so that
    # an ack costs the same however many entries a segment holds: thousands, when traffic is low).
    unacked: int = 0
    # Every entry before this index is acked or claimed: take() starts there, so taking a
    # segment's entries batch by batch is linear in them, not quadratic (a released entry moves it back).
    cursor: int = 0
    writable: bool = False
    gone: bool = False


class Spool:
    """Batches kept on disk until the control plane acknowledges them."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        policy: FullPolicy,
        segment_bytes: int = 0,
        disk: Disk | None = None,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.policy = policy
        self.segment_bytes = segment_bytes or max(512, min(4 * 1024 * 1024, max_bytes // 8))
        self.disk = disk or Disk()
        self._lock = threading.Lock()
        self._segments: list[Segment] = []  # oldest first
        self._active: Segment | None = None
        self._counter = 0
        self._last_warning = 0.0
        self._last_error = ""
        # drop_newest, once an entry is refused: the bytes used then. Nothing newer is taken until
        # room is freed, or a smaller later group would slip into the gap and be kept over older ones.
        self._full_at: int | None = None
        # Read by the event loop without the lock.
        self.dropped: Counter[str] = Counter()  # records, by reason: spool_full | corrupt
        self.errors: Counter[str] = Counter()  # failed writes/reads, by errno name or short_write
        self.dropped_batches = 0
        self.corrupt_entries = 0
        self.adopted_segments = 0
        self.pending_entries = 0
        self.held_records = 0
        self.held_batches = 0
        self.bytes = 0  # of every segment in the directory, as of the last append or open

    # -- lifecycle --

    def open(self) -> None:
        """Create the directory and adopt whatever unowned segments it holds."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.adopt()

    def close(self) -> None:
        """Release every segment (files stay for whoever comes next)."""
        with self._lock:
            for seg in self._segments:
                self._close_fd(seg)
            self._segments.clear()
            self._active = None

    def adopt(self) -> int:
        """Take over unlocked segments in the directory; the number of entries gained."""
        with self._lock:
            held = {seg.path.name for seg in self._segments}
            gained = 0
            for path in sorted(self.directory.glob(f"*{SUFFIX}")):
                if path.name in held:
                    continue
                fd = lock_unowned(self.disk, path)
                if fd is None:
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
            self.bytes = dir_bytes(self.directory, SUFFIX)
            return gained

    # -- writing --

    def append(self, groups: list[tuple[bytes, int]]) -> tuple[list[Entry | None], str]:
        """Write ``(payload, records)`` groups with one fdatasync: each one's claimed entry or None, and why.

        None means not stored: the spool is full (``spool_full``; the caller applies the policy),
        or the disk failed (the errno's name or ``short_write``; counted in ``errors``, a warning
        logged). Never raises.
        """
        with self._lock:
            out: list[Entry | None] = [None] * len(groups)
            reason = ""
            used = dir_bytes(self.directory, SUFFIX)
            if self._full_at is not None and used < self._full_at:
                self._full_at = None  # room was freed since (acks, here or in another worker)
            written: list[tuple[int, Entry]] = []
            for i, (payload, records) in enumerate(groups):
                data = frame(payload, records)
                if self._full_at is None and used + len(data) > self.max_bytes:
                    used = self._make_room(len(data), used)
                    if used + len(data) > self.max_bytes and self.policy == "drop_newest":
                        self._full_at = used
                if self._full_at is not None or used + len(data) > self.max_bytes:
                    reason = reason or "spool_full"
                    continue
                entry = self._write(data, payload, records)
                if entry is None:
                    reason = self._last_error
                    break
                used += len(data)
                written.append((i, entry))
                if entry.segment.size >= self.segment_bytes:
                    entry.segment.writable = False  # rotate; synced below with the rest
                    self._active = None
            for seg in dict.fromkeys(e.segment for _, e in written):
                try:
                    self.disk.fdatasync(seg.fd)
                except OSError as exc:
                    reason = why(exc)
                    for _, e in written:
                        if e.segment is seg:
                            self._forget(e)
                    self._failed(reason, seg)
            for i, entry in written:
                if not entry.forgotten:
                    out[i] = entry
            self.bytes = dir_bytes(self.directory, SUFFIX)
            return out, reason

    def _write(self, data: bytes, payload: bytes, records: int) -> Entry | None:
        try:
            seg = self._writable()
            n = self.disk.pwrite(seg.fd, data, seg.size)
        except OSError as exc:
            self._failed(why(exc), self._active)
            return None
        if n != len(data):  # a full disk: cut the partial frame off so no torn entry stays behind
            try:
                self.disk.ftruncate(seg.fd, seg.size)
            except OSError:
                pass  # the next reader skips the torn tail by its checksum
            self._failed("short_write", seg)
            return None
        entry = Entry(seg, seg.size + HEADER_SIZE, len(payload), records, zlib.crc32(payload), claimed=True,
                      index=len(seg.entries))  # fmt: skip
        seg.entries.append(entry)
        seg.unacked += 1
        seg.size += len(data)
        self.held_records += records
        self.held_batches += 1
        return entry

    def _failed(self, reason: str, seg: Segment | None) -> None:
        self._last_error = reason
        self.errors[reason] += 1
        if seg is not None:  # never append after a failure: its tail is suspect
            seg.writable = False
            if seg is self._active:
                self._active = None
            if not seg.entries:
                self._delete(seg)  # else a failing disk would collect one empty file per attempt
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            log.warning(
                "usage spool %s: write failed (%s; %d failures so far); records stay in memory",
                self.directory, reason, sum(self.errors.values()),
            )  # fmt: skip

    def _make_room(self, size: int, used: int) -> int:
        if self.policy != "drop_oldest":
            return used
        for seg in list(self._segments):
            if used + size <= self.max_bytes:
                break
            lost = sum(e.records for e in seg.entries if not e.acked and not e.claimed)
            if lost:
                self.dropped["spool_full"] += lost
                self.dropped_batches += sum(1 for e in seg.entries if not e.acked and not e.claimed)
                log.warning(
                    "usage spool full: dropped oldest segment %s (%d records; %d dropped so far)",
                    seg.path.name, lost, self.dropped["spool_full"],
                )  # fmt: skip
            used -= seg.size
            self._delete(seg)
        return used

    def _writable(self) -> Segment:
        if self._active is not None:
            return self._active
        self._counter += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._counter:06d}{SUFFIX}"
        fd = create_locked(self.disk, self.directory, name)
        seg = Segment(self.directory / name, fd, 0, writable=True)
        self._segments.append(seg)
        self._active = seg
        return seg

    # -- reading and acknowledging --

    def take(self, max_records: int) -> list[tuple[Entry, node_pb2.UsageBatch]]:
        """Claim and read pending entries, oldest first, up to ``max_records`` (at least one entry).

        Entries that fail their checksum or do not parse are counted (``corrupt``) and skipped.
        """
        with self._lock:
            out: list[tuple[Entry, node_pb2.UsageBatch]] = []
            records = 0
            for seg in list(self._segments):
                if not seg.pending:
                    continue
                entries = seg.entries
                at = seg.cursor
                while at < len(entries) and (entries[at].acked or entries[at].claimed):
                    at += 1
                seg.cursor = at
                for entry in itertools.islice(entries, at, None):
                    if entry.acked or entry.claimed:
                        continue
                    if out and records + entry.records > max_records:
                        return out
                    batch = self._read(entry)
                    if batch is None:
                        continue
                    self._set_claimed(entry, True)
                    out.append((entry, batch))
                    records += entry.records
            return out

    def _read(self, entry: Entry) -> node_pb2.UsageBatch | None:
        seg = entry.segment
        try:
            payload = self.disk.pread(seg.fd, entry.length, entry.offset)
            if len(payload) != entry.length or zlib.crc32(payload) != entry.crc:
                raise ValueError("checksum")
            batch = node_pb2.UsageBatch()
            batch.ParseFromString(payload)
        except Exception as exc:  # noqa: BLE001 - anything unreadable is skipped and counted
            reason = why(exc) if isinstance(exc, OSError) else "corrupt"
            self.errors[reason] += 1
            self.corrupt_entries += 1
            self.dropped["corrupt"] += entry.records
            log.warning(
                "usage spool: unreadable entry at byte %d of %s (%s): %d records dropped",
                entry.offset, seg.path.name, reason, entry.records,
            )  # fmt: skip
            self._ack_one(entry)
            return None
        return batch

    def release(self, entries: list[Entry]) -> list[Entry]:
        """The shipper lets go of these entries' records: they are pending again. The ones released;
        the others (their segment was dropped meanwhile) the caller must keep in memory."""
        with self._lock:
            out = []
            for entry in entries:
                if not entry.acked and not entry.segment.gone:
                    self._set_claimed(entry, False)
                    out.append(entry)
            return out

    def ack(self, entries: list[Entry]) -> None:
        """The control plane stored these entries; fully acknowledged segments are deleted."""
        with self._lock:
            for entry in entries:
                self._ack_one(entry)

    def _ack_one(self, entry: Entry) -> None:
        if entry.acked:
            return
        seg = entry.segment
        if not seg.gone:
            self._set_claimed(entry, True)  # no longer pending
            self.held_records -= entry.records
            self.held_batches -= 1
        entry.acked = True
        seg.unacked -= 1
        if not seg.gone and not seg.unacked:
            self._delete(seg)

    def _set_claimed(self, entry: Entry, claimed: bool) -> None:
        if entry.claimed != claimed:
            entry.claimed = claimed
            delta = -1 if claimed else 1
            seg = entry.segment
            seg.pending += delta
            self.pending_entries += delta
            if not claimed and entry.index < seg.cursor:
                seg.cursor = entry.index

    # -- internals --

    def _forget(self, entry: Entry) -> None:
        """An entry whose write was not made durable: not an entry at all."""
        entry.segment.entries.remove(entry)
        entry.segment.unacked -= 1
        entry.forgotten = True
        self.held_records -= entry.records
        self.held_batches -= 1

    def _load(self, path: Path, fd: int) -> Segment:
        seg = Segment(path, fd, 0)
        try:
            size = os.fstat(fd).st_size
            data = self.disk.pread(fd, size, 0) if size else b""
        except OSError as exc:
            self.errors[why(exc)] += 1
            log.warning("usage spool: cannot read %s (%s); left alone", path.name, why(exc))
            return seg
        found = scan(data)
        for offset, records in found.corrupt:
            self._corrupt(path, offset, records)
        seg.entries = [
            Entry(seg, f.offset, f.length, f.records, f.crc, index=i) for i, f in enumerate(found.entries)
        ]
        seg.size = len(data)
        seg.pending = seg.unacked = len(seg.entries)
        self.pending_entries += seg.pending
        self.held_batches += len(seg.entries)
        self.held_records += sum(e.records for e in seg.entries)
        return seg

    def _corrupt(self, path: Path, offset: int, records: int | None) -> None:
        self.corrupt_entries += 1
        if records:
            self.dropped["corrupt"] += records
        log.warning(
            "usage spool: corrupt or torn entry at byte %d of %s skipped (%s records dropped)",
            offset, path.name, "unknown" if records is None else records,
        )  # fmt: skip

    def _delete(self, seg: Segment) -> None:
        for e in seg.entries:
            if not e.acked:
                self.held_records -= e.records
                self.held_batches -= 1
                if not e.claimed:
                    self.pending_entries -= 1
        seg.pending = 0
        seg.gone = True
        self.bytes = max(0, self.bytes - seg.size)
        try:
            self.disk.unlink(seg.path)
        except OSError:
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
