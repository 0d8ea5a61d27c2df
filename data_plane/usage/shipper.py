"""Getting usage records to the control plane: batch, send, wait for the ack, spool when it cannot.

The request path only calls :meth:`Shipper.submit`, which appends to a list.
Two background tasks do the rest:

- *sessions*: one long-lived ``ReportUsage`` stream at a time. Spooled batches
  go first (oldest first), then batches from memory, at most ``WINDOW``
  unacknowledged at once. A batch is forgotten only when its ack arrives;
  when the stream fails, unacknowledged batches go back (memory ones to the
  front of the queue, spooled ones stay in the spool) and are sent again on
  the next stream. A resend may repeat a batch the control plane already
  stored (the ack was lost): it recognises the request ids and stores nothing
  twice. ``attempt`` on each record counts its sends.
- *housekeeping*: seals the open batch after ``batch_age`` seconds (or at
  ``batch_size`` records), moves batches that waited ``spill_after`` seconds
  without being acknowledged (control plane down or slow) to the on-disk
  spool, aborts a stream whose oldest ack is ``ack_timeout`` late, and adopts
  segments other processes left behind.

:meth:`Shipper.close` (shutdown) seals everything, lets a healthy stream
drain for up to ``flush`` seconds, then spools whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from odock.v1 import node_pb2

from data_plane.settings import UsageSettings
from data_plane.usage.spool import Entry, FullPolicy, Spool

log = logging.getLogger("odock.data_plane.usage")

WINDOW = 8  # unacknowledged batches on the stream
MEMORY_BATCHES = 64  # sealed batches held in memory before they are spooled regardless
ADOPT_EVERY = 30.0


class UsageStreams(Protocol):
    """Opens ReportUsage streams (``NodeClient``)."""

    def report_usage(self) -> grpc.aio.StreamStreamCall[node_pb2.UsageBatch, node_pb2.UsageAck]: ...


@dataclass(eq=False)
class _Batch:
    records: list[node_pb2.UsageRecord]
    sealed_at: float
    entry: Entry | None = None  # set when the batch was read from the spool
    sent_at: float = 0.0


class Shipper:
    """Owns the usage queue, the ReportUsage stream and the spool of one worker."""

    def __init__(
        self, streams: UsageStreams, settings: UsageSettings, node_id: str, reconnect_max: float = 10.0
    ) -> None:
        self._streams = streams
        self._settings = settings
        self._node_id = node_id
        self._reconnect_max = reconnect_max
        policy: FullPolicy = "drop_oldest" if settings.spool_full_policy == "drop_oldest" else "drop_newest"
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, policy)
        self._spool_ok = False
        self._spool_lock = asyncio.Lock()
        self._open: list[node_pb2.UsageRecord] = []
        self._opened_at = 0.0
        self._memory: deque[_Batch] = deque()
        self._inflight: dict[int, _Batch] = {}
        self._sequence = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._abort = asyncio.Event()
        self._healthy = False  # an ack arrived on the current stream
        self._in_session = False
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self.counters: Counter[str] = Counter()

    # -- request path --

    def submit(self, record: node_pb2.UsageRecord) -> None:
        """Queue one record (never blocks, never raises)."""
        self.counters["records"] += 1
        if self._closed:  # a request outliving shutdown: nowhere left to put it, but not silently
            self.counters["dropped_records"] += 1
            log.warning("usage record %s dropped: the shipper is closed", record.request_id)
            return
        if not self._open:
            self._opened_at = time.monotonic()
        self._open.append(record)
        if len(self._open) >= self._settings.batch_size:
            self._seal()

    # -- lifecycle --

    async def start(self) -> None:
        """Open the spool (adopting what others left) and start the background tasks."""
        try:
            await asyncio.to_thread(self.spool.open)
            self._spool_ok = True
        except OSError as exc:
            log.error(
                "usage spool %s unusable (%s): batches that cannot be delivered will be dropped and counted",
                self._settings.spool_dir, exc.strerror or type(exc).__name__,
            )  # fmt: skip
        self._tasks = [
            asyncio.create_task(self._sessions(), name="odock-usage-stream"),
            asyncio.create_task(self._housekeeping(), name="odock-usage-housekeeping"),
        ]

    async def close(self) -> None:
        """Flush to a healthy control plane for up to ``flush`` seconds; spool the rest."""
        self._closed = True
        self._seal()
        self._wake.set()
        deadline = time.monotonic() + self._settings.flush
        # Wait on a stream that works, or that still owes acks for batches it took.
        while (self._memory or self._inflight) and (self._healthy or (self._inflight and self._in_session)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._requeue_inflight()
        left = list(self._memory)
        self._memory.clear()
        if left:
            await self._spill(left)
        if self._spool_ok:
            async with self._spool_lock:
                await asyncio.to_thread(self.spool.close)
        log.info("usage shipper closed: %s", self.status())

    def status(self) -> dict[str, Any]:
        """Counters for /readyz."""
        return {
            "stream": "connected" if self._healthy else "disconnected",
            "records": self.counters["records"],
            "queued_records": len(self._open) + sum(len(b.records) for b in self._memory),
            "inflight_batches": len(self._inflight),
            "spooled_batches": self.spool.held_batches(),
            "spooled_records": self.spool.held_records(),
            "spool_bytes": self.spool.disk_bytes() if self._spool_ok else 0,
            "spool_full_policy": self.spool.policy,
            "dropped_records": self.spool.dropped_records + self.counters["dropped_records"],
            "torn_spool_entries": self.spool.torn_entries,
            "sent_batches": self.counters["sent_batches"],
            "acked_batches": self.counters["acked_batches"],
            "accepted": self.counters["accepted"],
            "duplicates": self.counters["duplicates"],
            "rejected": self.counters["rejected"],
        }

    # -- batching and spooling --

    def _seal(self) -> None:
        if self._open:
            self._memory.append(_Batch(self._open, time.monotonic()))
            self._open = []
            self._wake.set()

    async def _spill(self, batches: list[_Batch]) -> None:
        records = sum(len(b.records) for b in batches)
        if not self._spool_ok:
            self.counters["dropped_records"] += records
            log.warning("usage: %d records dropped (no usable spool)", records)
            return
        protos = [node_pb2.UsageBatch(node_id=self._node_id, records=b.records) for b in batches]
        async with self._spool_lock:
            stored = await asyncio.to_thread(self.spool.append, protos)
        log.info("usage: spooled %d of %d batches (%d records)", stored, len(batches), records)
        self._wake.set()

    async def _housekeeping(self) -> None:
        period = max(0.005, min(self._settings.batch_age, self._settings.spill_after) / 4)
        last_adopt = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._open and now - self._opened_at >= self._settings.batch_age:
                self._seal()
            if self._inflight:
                oldest = min(b.sent_at for b in self._inflight.values())
                if now - oldest >= self._settings.ack_timeout:
                    log.warning("usage: no ack for %.1fs; restarting the stream", now - oldest)
                    self._abort.set()
            spill: list[_Batch] = []
            while self._memory and (
                now - self._memory[0].sealed_at >= self._settings.spill_after
                or len(self._memory) > MEMORY_BATCHES
            ):
                spill.append(self._memory.popleft())
            if spill:
                await self._spill(spill)
            if self._spool_ok and now - last_adopt >= ADOPT_EVERY:
                last_adopt = now
                async with self._spool_lock:
                    if await asyncio.to_thread(self.spool.adopt):
                        self._wake.set()

    # -- the stream --

    async def _sessions(self) -> None:
        failures = 0
        while True:
            await self._work_waiting()
            acked = await self._session()
            failures = 0 if acked else failures + 1
            if failures:
                delay = min(self._reconnect_max, 0.1 * 2 ** min(failures, 16))
                await asyncio.sleep(random.uniform(0, delay))

    def _has_work(self) -> bool:
        return bool(self._memory) or (self._spool_ok and bool(self.spool.pending()))

    async def _work_waiting(self) -> None:
        while True:
            self._wake.clear()
            if self._has_work():
                return
            await self._wake.wait()

    async def _session(self) -> bool:
        """One stream, until it fails or stays idle; True when it delivered at least one ack."""
        call = self._streams.report_usage()
        self._abort.clear()
        self._in_session = True
        acks_before = self.counters["acked_batches"]
        reader = asyncio.create_task(self._read_acks(call))
        try:
            while True:
                batch = await self._next_batch(reader)
                if batch is None:
                    break
                self._sequence += 1
                for record in batch.records:
                    record.attempt += 1
                batch.sent_at = time.monotonic()
                self._inflight[self._sequence] = batch
                self.counters["sent_batches"] += 1
                await call.write(
                    node_pb2.UsageBatch(node_id=self._node_id, sequence=self._sequence, records=batch.records)
                )
            if not self._inflight and not reader.done() and not self._abort.is_set():
                # Idle: end the stream cleanly so a restarting control plane is not held up by it.
                await call.done_writing()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), self._settings.ack_timeout)
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            log.info("usage stream write failed: %s", _why(exc))
        finally:
            self._healthy = self._in_session = False
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
            self._requeue_inflight()
        return self.counters["acked_batches"] > acks_before

    async def _next_batch(self, reader: asyncio.Task[None]) -> _Batch | None:
        """The next batch to write; None when the stream failed, was aborted, or has been idle a while."""
        idle = max(1.0, self._settings.batch_age * 2)
        while True:
            self._wake.clear()
            if reader.done() or self._abort.is_set():
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    log.info("usage stream failed: %s", _why(reader.exception()))
                return None
            if len(self._inflight) < WINDOW:
                batch = await self._take()
                if batch is not None:
                    return batch
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self._abort.wait())]
            try:
                done, _ = await asyncio.wait(
                    [*waits, reader],
                    timeout=None if self._inflight or self._open else idle,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()
            if not done:
                return None

    async def _take(self) -> _Batch | None:
        """The next batch to send: the oldest spooled one, else the oldest in memory."""
        while self._spool_ok:
            async with self._spool_lock:
                pending = self.spool.pending()
                if not pending:
                    break
                entry = pending[0]
                entry.sending = True
                proto = await asyncio.to_thread(self.spool.read, entry)
            if proto is not None:
                return _Batch(list(proto.records), time.monotonic(), entry=entry)
        return self._memory.popleft() if self._memory else None

    async def _read_acks(
        self, call: grpc.aio.StreamStreamCall[node_pb2.UsageBatch, node_pb2.UsageAck]
    ) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                log.info("usage stream ended by the control plane")
                return
            assert isinstance(ack, node_pb2.UsageAck)
            batch = self._inflight.pop(ack.sequence, None)
            if batch is None:
                log.warning("usage: ack for unknown batch %d ignored", ack.sequence)
                continue
            self._healthy = True
            self.counters["acked_batches"] += 1
            self.counters["accepted"] += ack.accepted
            self.counters["duplicates"] += ack.duplicates
            self.counters["rejected"] += ack.rejected
            if ack.rejected:
                log.warning(
                    "usage: control plane rejected %d records of batch %d", ack.rejected, ack.sequence
                )
            if batch.entry is not None:
                async with self._spool_lock:
                    await asyncio.to_thread(self.spool.ack, batch.entry)
            self._progress.set()
            self._wake.set()

    def _requeue_inflight(self) -> None:
        """Unacknowledged batches go back: memory ones to the front of the queue, spooled ones to the spool."""
        back: list[_Batch] = []
        for seq in sorted(self._inflight):
            batch = self._inflight.pop(seq)
            if batch.entry is None:
                back.append(batch)
            elif batch.entry.segment.gone:
                self.counters["dropped_records"] += batch.entry.records
            else:
                batch.entry.sending = False
        self._memory.extendleft(reversed(back))
        self._progress.set()


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__
