"""The usage journal: records made durable within ``commit_interval``, batched for the stream, bounded.

A finished request's meter is taken by :meth:`Journal.submit_closed`, and once per
event-loop iteration the records of the meters closed in it are built and encoded
together (:meth:`Journal.submit`, no I/O), after their responses went out (with
the request lines built the same way, 7 % less CPU per chat request at c=64: issue 16,
docs/benchmarks.md), and the cost stays spread evenly, not a burst per commit. Every
``commit_interval`` seconds :meth:`Journal.commit` takes that list and, in one executor
call, joins the encoded records and appends them to the spool
(one ``pwrite`` per group of at most ``batch_size`` records, one
``fdatasync``): the spool directory is the write-ahead log. The committed
records then join the open batch, which is sealed at ``batch_size`` records or
``batch_age`` seconds and waits in ``memory`` for the stream. A batch keeps
its records in memory together with the spool entries that hold them
(*chunks*); when the control plane acknowledges it, the entries are
acknowledged and their segment deleted once all of its entries are.

- A batch not acknowledged ``spill_after`` seconds after sealing (or beyond
  ``MEMORY_BATCHES``) lets go of its records: they are on disk already and are
  read back when a stream works again.
- A group the spool could not take (a write error, a short write, a full or
  read-only disk, the size bound under ``drop_newest``) stays in memory,
  *not durable*, and is sent from there; writing it is retried every
  ``RETRY_SECONDS``. Such records beyond ``memory_max`` are dropped by the
  configured policy (oldest or newest first), counted and logged.
- At shutdown the last records are committed and whatever is still not
  durable is written once more; what cannot be is counted (``shutdown``).

Every drop is counted by reason (``dropped``) and logged at WARNING; the
spool's own counts (``spool_full`` under ``drop_oldest``, ``corrupt``) are
added by the shipper's status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Protocol

from data_plane.settings import UsageSettings
from data_plane.usage.frames import encoded_frame, record_frame
from data_plane.usage.spool import Entry, Spool
from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.usage")

MEMORY_BATCHES = 64  # durable batches kept in memory before they are read back from the spool instead
RETRY_SECONDS = 1.0  # between attempts to write records the spool refused
WARN_EVERY = 10.0
DROP_LOG_EVERY = 1.0  # a flood of drops (every request, say) is logged as one line a second
DROP_REASONS = ("spool_full", "disk_error", "memory_full", "corrupt", "shutdown", "record_error")


class ClosedMeter(Protocol):
    """A request's closed meter (``meter.RequestMeter``)."""

    def final_encoded(self) -> bytes:
        """Its record, encoded; never raises."""
        ...


@dataclass(eq=False)
class Chunk:
    """Records committed together, each as encoded at submit (an element of UsageBatch.records on
    the wire: what the spool holds and the stream sends), and the spool entry holding them (None:
    not durable, and why)."""

    frames: list[bytes]
    entry: Entry | None
    why: str = ""

    @property
    def durable(self) -> bool:
        return self.entry is not None and not self.entry.segment.gone


@dataclass(eq=False)
class Batch:
    """What goes up the stream as one UsageBatch."""

    chunks: list[Chunk]
    sealed_at: float
    size: int = 0
    sent_at: float = 0.0
    sends: int = 0  # how many times the stream took it (the batch's ``attempt``)
    entries: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.size = sum(len(c.frames) for c in self.chunks)

    def records(self) -> list[node_pb2.UsageRecord]:
        """The records, decoded (for tests and tools: the stream sends the encodings)."""
        return list(node_pb2.UsageBatch.FromString(b"".join(f for c in self.chunks for f in c.frames)).records)

    def encoded(self, node_id: str, sequence: int) -> bytes:
        """The UsageBatch message as sent: a head, then the records encoded when they were made.

        One join instead of copying 500 records into a message that gRPC then encodes again on
        the event loop (about 0.7 ms a batch, which showed in chat's p99 at concurrency 1).
        """
        head = node_pb2.UsageBatch(node_id=node_id, sequence=sequence, attempt=self.sends)
        return head.SerializeToString() + b"".join(f for c in self.chunks for f in c.frames)

    def durable(self) -> bool:
        return all(c.durable for c in self.chunks)


class Journal:
    """The records of one worker between the request path and the stream."""

    def __init__(self, settings: UsageSettings, node_id: str, spool: Spool) -> None:
        self._settings = settings
        self._node_id = node_id
        self.spool = spool
        self.spool_ok = False
        self.closed = False
        # The records submitted since the last commit, each encoded once (frames.encoded_frame): the
        # spool and the stream only ever need the encodings, so the objects are not kept.
        self._pending: list[bytes] = []
        # Meters closed since the loop last built their records (a loop iteration's worth).
        self._closed: list[ClosedMeter] = []
        self._build_loop: asyncio.AbstractEventLoop | None = None
        self._header = node_pb2.UsageBatch(node_id=node_id).SerializeToString()
        self._pending_since = 0.0
        # Resolved by the next commit to start (whether it spooled all it wrote): see durable().
        self._next_commit: asyncio.Future[bool] | None = None
        self._last_commit_whole = True  # the last commit that wrote anything spooled it all
        # Records waiting for a commit: normally one interval's worth; more only when commits hang.
        self._pending_max = max(settings.memory_max, 4 * settings.batch_size)
        self._open: list[Chunk] = []
        self._open_records = 0
        self._opened_at = 0.0
        self.memory: deque[Batch] = deque()
        self._memory_records = 0
        # Records a commit or a spill holds while it waits for the disk: still in memory, so
        # queued() counts them (else /readyz would show them nowhere for that moment).
        self._moving = 0
        self._retry_at = 0.0
        self._warned_at = -WARN_EVERY
        self.wake = asyncio.Event()  # a batch is ready for the stream
        self.dropped: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._why: dict[str, str] = {}
        self._drops_logged_at = -DROP_LOG_EVERY
        self.submitted = 0
        self.not_durable = 0  # records the spool could not take when committed
        self.commits = 0
        self.commit_waits: deque[float] = deque(maxlen=4096)  # drained by the metrics
        self.recent_waits: deque[float] = deque(maxlen=1024)  # for /readyz p50/p99

    # -- request path --

    def submit_closed(self, meter: ClosedMeter) -> None:
        """Take a closed meter; its record is built by the next loop iteration's callbacks, at
        once when this thread runs no loop (never blocks, never raises)."""
        self._closed.append(meter)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.build_closed()
            return
        if self._build_loop is not loop:  # one callback per iteration (per loop, should it change)
            self._build_loop = loop
            loop.call_soon(self.build_closed)

    def build_closed(self) -> None:
        """Build and queue the records of the meters closed so far (each is built once)."""
        self._build_loop = None
        closed, self._closed = self._closed, []
        for meter in closed:
            try:
                self.submit_encoded(meter.final_encoded())
            except Exception as exc:  # a bug in one record must not lose the others built with it
                if not self.dropped["record_error"]:  # a bug: its first traceback, not one per request
                    log.error("usage record could not be built or encoded", exc_info=exc)
                self.drop("record_error", 1, f"a usage record could not be built or encoded ({type(exc).__name__})")

    def submit(self, record: node_pb2.UsageRecord) -> None:
        """Queue one record for the next commit (never blocks, never raises)."""
        self.submit_encoded(record.SerializeToString())

    def submit_encoded(self, record: bytes) -> None:
        """Queue one encoded record for the next commit (never blocks, never raises)."""
        self.submitted += 1
        if self.closed:  # a request outliving shutdown: nowhere left to put it, but not silently
            self.drop("shutdown", 1, "the shipper is closed")
            return
        pending = self._pending
        if not pending:
            self._pending_since = time.monotonic()
        elif len(pending) >= self._pending_max:  # commits are stuck (a hanging disk)
            if self._settings.spool_full_policy != "drop_oldest":
                self.drop(
                    "memory_full", 1, "records waiting for the spool are at ODOCK_USAGE_MEMORY_MAX_RECORDS"
                )
                return
            cut = max(1, len(pending) // 10)
            del pending[:cut]
            self.drop(
                "memory_full", cut, "records waiting for the spool are at ODOCK_USAGE_MEMORY_MAX_RECORDS"
            )
        pending.append(encoded_frame(record))

    def queued(self) -> int:
        """Records in memory not yet sent (waiting for a commit, in the open batch, or sealed)."""
        waiting = len(self._closed) + len(self._pending) + self._moving
        return waiting + self._open_records + self._memory_records

    def drop(self, reason: str, records: int, why: str) -> None:
        """Count lost records and say so (WARNING): at once, then at most once a second, summed."""
        self.dropped[reason] += records
        self._unlogged[reason] += records
        self._why[reason] = why
        if time.monotonic() - self._drops_logged_at >= DROP_LOG_EVERY:
            self.log_drops()

    def log_drops(self) -> None:
        """Log the drops not logged yet (one line per reason)."""
        self._drops_logged_at = time.monotonic()
        total = sum(self.dropped.values())
        for reason, count in self._unlogged.items():
            log.warning("usage: %d records dropped (%s): %s; %d dropped so far", count, reason,
                        self._why[reason], total)  # fmt: skip
        self._unlogged.clear()

    # -- committing --

    async def commit_forever(self, stop: asyncio.Event) -> None:
        """Commit every ``commit_interval`` until ``stop`` is set, then once more."""
        interval = self._settings.commit_interval
        while not stop.is_set():
            started = time.monotonic()
            await self.commit()
            rest = interval - (time.monotonic() - started)
            if rest > 0:
                try:
                    await asyncio.wait_for(stop.wait(), rest)
                except TimeoutError:
                    pass
        await self.commit()

    async def durable(self, timeout: float) -> bool:
        """Until the records submitted or closed so far are committed, for at most ``timeout`` seconds:
        whether they all reached the spool.

        For the one record whose loss nothing would make up (a batch's usage, claimed once: see
        ``objects/batch_usage.py``); a request's record never waits.
        """
        if self.closed:
            return False
        waiting = self._next_commit
        if waiting is None:
            waiting = self._next_commit = asyncio.get_running_loop().create_future()
        try:
            return await asyncio.wait_for(asyncio.shield(waiting), timeout)
        except TimeoutError:
            return False

    async def commit(self) -> None:
        """Write the records submitted since the last commit (one write + fdatasync, off the loop)."""
        self.build_closed()  # meters closed in this iteration are in this commit (and at shutdown)
        waiting, self._next_commit = self._next_commit, None
        whole = False
        try:
            whole = await self._commit()
        finally:  # a cancelled or failed commit answers its waiters too: not spooled
            if waiting is not None:
                waiting.set_result(whole)

    async def _commit(self) -> bool:
        """The commit's work; whether everything submitted so far reached the spool."""
        frames, since = self._pending, self._pending_since
        if not frames:
            return self._last_commit_whole
        self._pending = []
        size = self._settings.batch_size
        groups = [frames[i : i + size] for i in range(0, len(frames), size)]
        self._moving += len(frames)
        try:
            entries, why = await self._write(groups)
        except asyncio.CancelledError:
            # Written again later at worst: ids dedup replays.
            self._pending = frames + self._pending
            raise
        finally:
            self._moving -= len(frames)
        self.commits += 1
        wait = time.monotonic() - since
        self.commit_waits.append(wait)
        self.recent_waits.append(wait)
        lost = 0
        for group, entry in zip(groups, entries, strict=True):
            self._add(Chunk(group, entry, "" if entry is not None else why))
            lost += 0 if entry is not None else len(group)
        self._last_commit_whole = not lost
        if lost:
            self.not_durable += lost
            self._warn(f"{lost} records not written to the spool ({why}); kept in memory until delivered")
        return not lost

    async def _write(self, groups: list[list[bytes]]) -> tuple[list[Entry | None], str]:
        if not self.spool_ok:
            return [None] * len(groups), "no_spool"
        try:
            return await asyncio.to_thread(self._append, groups)
        except Exception as exc:  # noqa: BLE001 - a bug here must not lose the records: they stay in memory
            log.error("usage spool append failed: %s: %s", type(exc).__name__, exc)
            return [None] * len(groups), type(exc).__name__

    def _append(self, groups: list[list[bytes]]) -> tuple[list[Entry | None], str]:
        # The records were encoded one by one at submit: a join, not a 500-record encode
        # holding the interpreter (and so the event loop) for a millisecond.
        payloads = [(self._header + b"".join(group), len(group)) for group in groups]
        return self.spool.append(payloads)

    def _add(self, chunk: Chunk) -> None:
        n = len(chunk.frames)
        if self._open_records and self._open_records + n > self._settings.batch_size:
            self.seal()
        if not self._open:
            self._opened_at = time.monotonic()
        self._open.append(chunk)
        self._open_records += n
        if self._open_records >= self._settings.batch_size:
            self.seal()

    def seal(self) -> None:
        """Close the open batch: it is ready for the stream."""
        if self._open:
            self._push(Batch(self._open, time.monotonic()))
            self._open, self._open_records = [], 0

    def seal_if_old(self, now: float) -> None:
        if self._open and now - self._opened_at >= self._settings.batch_age:
            self.seal()

    def _push(self, batch: Batch, front: bool = False) -> None:
        if front:
            self.memory.appendleft(batch)
        else:
            self.memory.append(batch)
        self._memory_records += batch.size
        # Also when a spill puts batches back: the stream may have looked while they were out.
        self.wake.set()

    # -- the stream's side --

    async def take(self, max_records: int) -> Batch | None:
        """The next batch to send: spooled records first (oldest first), else the oldest in memory."""
        if self.spool_ok and self.spool.pending_entries:
            chunks = await asyncio.to_thread(self._take_spooled, max_records)
            if chunks:
                return Batch(chunks, time.monotonic())
        if self.memory:
            batch = self.memory.popleft()
            self._memory_records -= batch.size
            return batch
        return None

    def _take_spooled(self, max_records: int) -> list[Chunk]:
        """Entries read back from the spool, their records encoded for the stream (in the thread)."""
        return [Chunk([record_frame(r) for r in b.records], e) for e, b in self.spool.take(max_records)]

    def has_work(self) -> bool:
        return bool(self.memory) or (self.spool_ok and self.spool.pending_entries > 0)

    async def acked(self, batch: Batch) -> None:
        """The control plane stored ``batch``: its spool entries are done with."""
        entries = [c.entry for c in batch.chunks if c.entry is not None]
        if entries:
            await asyncio.to_thread(self.spool.ack, entries)

    def requeue(self, batches: list[Batch]) -> None:
        """Unacknowledged batches go back to the front, in order; durable ones fall back to the spool
        at the next :meth:`spill` (the stream failed: they wait there, not in memory)."""
        for batch in reversed(batches):
            if batch.durable():
                batch.sealed_at = float("-inf")
            self._push(batch, front=True)

    # -- housekeeping --

    async def spill(self, now: float, everything: bool = False) -> None:
        """Let go of old batches' durable records; retry writing the rest; keep memory bounded."""
        old: list[Batch] = []
        while self.memory and (
            everything
            or now - self.memory[0].sealed_at >= self._settings.spill_after
            or len(self.memory) > MEMORY_BATCHES
        ):
            batch = self.memory.popleft()
            self._memory_records -= batch.size
            old.append(batch)
        if old:
            moving = sum(batch.size for batch in old)
            self._moving += moving
            try:
                await self._spill(old, now, everything)
            finally:
                self._moving -= moving
        self._bound()
        if self._unlogged and time.monotonic() - self._drops_logged_at >= DROP_LOG_EVERY:
            self.log_drops()

    async def _spill(self, old: list[Batch], now: float, everything: bool) -> None:
        chunks = [c for b in old for c in b.chunks]
        redo = [c for c in chunks if not c.durable]
        if redo and self.spool_ok and (everything or now >= self._retry_at):
            self._retry_at = now + RETRY_SECONDS
            entries, why = await self._write([c.frames for c in redo])
            for chunk, entry in zip(redo, entries, strict=True):
                chunk.entry, chunk.why = (entry, "") if entry is not None else (None, why)
        held = [c.entry for c in chunks if c.durable and c.entry is not None]
        # Only what the spool confirms it holds leaves memory (drop_oldest may delete a segment meanwhile).
        released = set(await asyncio.to_thread(self.spool.release, held)) if held else set()
        keep = [c for c in chunks if c.entry is None or c.entry not in released]
        for chunk in keep:
            if chunk.entry is not None and chunk.entry.segment.gone:
                chunk.entry, chunk.why = None, "spool_full"
        # Back to the front, in order, in batches the stream can take (a chunk is at most batch_size).
        batches: list[list[Chunk]] = []
        size = self._settings.batch_size
        for chunk in keep:
            if not batches or sum(len(c.frames) for c in batches[-1]) + len(chunk.frames) > size:
                batches.append([])
            batches[-1].append(chunk)
        for chunks in reversed(batches):
            self._push(Batch(chunks, old[0].sealed_at), front=True)

    def _bound(self) -> None:
        """Records that are only in memory stay under ``memory_max``: the policy drops the excess."""
        cap = self._settings.memory_max
        excess = sum(len(c.frames) for b in self.memory for c in b.chunks if not c.durable) - cap
        if excess <= 0:
            return
        newest = self._settings.spool_full_policy != "drop_oldest"
        lost: Counter[str] = Counter()
        why = ""
        for batch in list(reversed(self.memory) if newest else self.memory):
            for chunk in list(reversed(batch.chunks) if newest else batch.chunks):
                if excess <= 0:
                    break
                if chunk.durable:
                    continue
                k = min(excess, len(chunk.frames))
                if newest:
                    del chunk.frames[len(chunk.frames) - k :]
                else:
                    del chunk.frames[:k]
                excess -= k
                batch.size -= k
                self._memory_records -= k
                # A chunk whose segment drop_oldest deleted while it sat in memory (before any spill
                # marked it) was pushed out by the size bound, not by a failing disk.
                full = chunk.why == "spool_full" or (chunk.entry is not None and chunk.entry.segment.gone)
                lost["spool_full" if full else "disk_error"] += k
                why = why or chunk.why or ("spool_full" if full else "")
            batch.chunks = [c for c in batch.chunks if c.frames]
            if not batch.chunks:
                self.memory.remove(batch)
        for reason, count in lost.items():
            self.drop(reason, count, f"the spool cannot take them ({why}) and memory holds "
                      f"ODOCK_USAGE_MEMORY_MAX_RECORDS={cap}")  # fmt: skip

    async def shutdown(self) -> None:
        """Commit and seal what is left, write what is not durable once more, count what still is not."""
        await self.commit()
        self.seal()
        await self.spill(time.monotonic(), everything=True)
        left = list(self.memory)
        self.memory.clear()
        self._memory_records = 0
        lost = sum(len(c.frames) for b in left for c in b.chunks if not c.durable)
        if lost:
            self.drop(
                "shutdown", lost, f"not durable at shutdown ({left[0].chunks[0].why or 'spool failing'})"
            )
        if self._unlogged:
            self.log_drops()
        if self.spool_ok:
            await asyncio.to_thread(self.spool.close)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning("usage: %s (%d so far)", message, self.not_durable)
