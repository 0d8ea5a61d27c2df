"""Getting usage records to the control plane: durable first, then sent, forgotten only when acknowledged.

The request path only calls :meth:`Shipper.submit_closed`, which appends to a list.
The :class:`~data_plane.usage.wal.Journal` makes records durable (the spool is
a write-ahead log, group-committed every ``commit_interval``), batches them
and keeps memory bounded. Three supervised background tasks (restarted with
backoff when they fail, ``task_restarts``) do the rest:

- *commits*: the journal's group commit, every ``commit_interval`` seconds.
- *sessions*: one long-lived ``ReportUsage`` stream at a time. Spooled batches
  go first (oldest first), then batches from memory, at most ``WINDOW``
  unacknowledged at once. A batch is forgotten only when its ack arrives;
  when the stream fails, unacknowledged batches go back to the front of the
  queue and are sent again on the next stream. A resend may repeat a batch the
  control plane already stored (the ack was lost): it recognises the request
  ids and stores nothing twice. A batch goes up already encoded (each record
  was encoded once, when it was made: ``Batch.encoded``), so a send costs a
  join, not an encode on the event loop; the batch's ``attempt`` counts its
  sends, and the control plane stores it for records that carry none.
  After a failed stream the next one is tried after 50 ms, doubling up to
  ``RETRY_MAX`` (1 s), and at once when the watch stream reconnects, so a
  control plane that answers again is reached within about a second.
- *housekeeping*: seals the open batch after ``batch_age`` seconds, lets old
  batches fall back to the spool, aborts a stream whose oldest ack is
  ``ack_timeout`` late, adopts segments other processes left behind, and
  reopens a spool that could not be opened.

:meth:`Shipper.close` (shutdown) commits and seals everything, lets a healthy
stream drain for up to ``flush`` seconds, then spools whatever is left; it
never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import grpc

from data_plane.settings import UsageSettings
from data_plane.usage.spool import Spool
from data_plane.usage.supervisor import supervise
from data_plane.usage.wal import Batch, Journal
from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.usage")

WINDOW = 8  # unacknowledged batches on the stream
ADOPT_EVERY = 30.0
REOPEN_EVERY = 5.0
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
PAUSE_POLL = 0.05
COMMIT_STOP_TIMEOUT = 10.0


class UsageStreams(Protocol):
    """Opens ReportUsage streams (``ControlPlaneLink``)."""

    def report_usage(self) -> grpc.aio.StreamStreamCall[bytes, node_pb2.UsageAck]:
        """A stream taking encoded ``UsageBatch`` messages (bytes)."""
        ...


class Shipper:
    """Owns the usage journal, the ReportUsage stream and the spool of one worker."""

    def __init__(
        self, streams: UsageStreams, settings: UsageSettings, node_id: str, reconnect_max: float = 10.0,
        cp_up: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        self._streams = streams
        self._cp_up = cp_up  # the watch stream is connected: a good moment to retry at once
        self._settings = settings
        self._node_id = node_id
        self._retry_max = min(RETRY_MAX, reconnect_max)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes, settings.spool_full_policy)
        self.journal = Journal(settings, node_id, self.spool)
        self._inflight: dict[int, Batch] = {}
        self._sequence = 0
        self._progress = asyncio.Event()
        self._abort = asyncio.Event()
        self._stop_commits = asyncio.Event()
        self._healthy = False  # an ack arrived on the current stream
        self._in_session = False
        self._commits: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.counters: Counter[str] = Counter()
        self.restarts: Counter[str] = Counter()
        self.submit_closed = self.journal.submit_closed  # the request path's one call: an append
        self.submit = self.journal.submit
        self.durable = self.journal.durable

    # -- lifecycle --

    async def start(self) -> None:
        """Open the spool (adopting what others left) and start the background tasks."""
        await self._open_spool()
        self._commits = asyncio.create_task(
            supervise("usage commits", lambda: self.journal.commit_forever(self._stop_commits), self.restarts),
            name="odock-usage-commits",
        )  # fmt: skip
        self._tasks = [
            asyncio.create_task(supervise("usage stream", self._sessions, self.restarts), name="odock-usage-stream"),
            asyncio.create_task(
                supervise("usage housekeeping", self._housekeeping, self.restarts), name="odock-usage-housekeeping"
            ),
        ]  # fmt: skip

    async def _open_spool(self) -> None:
        try:
            await asyncio.to_thread(self.spool.open)
            self.journal.spool_ok = True
        except OSError as exc:
            log.error(
                "usage spool %s unusable (%s): records stay in memory (up to ODOCK_USAGE_MEMORY_MAX_RECORDS) "
                "until delivered; retrying every %.0fs", self._settings.spool_dir, exc.strerror or type(exc).__name__,
                REOPEN_EVERY,
            )  # fmt: skip

    async def close(self) -> None:
        """Flush to a healthy control plane for up to ``flush`` seconds; spool the rest. Never raises."""
        try:
            await self._close()
        except Exception as exc:  # noqa: BLE001 - shutdown must finish; the counts say what was lost
            log.error("usage shipper: shutdown failed (%s: %s)", type(exc).__name__, exc)
        log.info("usage shipper closed: %s", self.status())

    async def _close(self) -> None:
        journal = self.journal
        self._stop_commits.set()
        if self._commits is not None:
            try:
                await asyncio.wait_for(self._commits, COMMIT_STOP_TIMEOUT)
            except TimeoutError:
                log.error(
                    "usage: the last commit did not finish in %.0fs (disk hanging?); not writing again",
                    COMMIT_STOP_TIMEOUT,
                )
                journal.spool_ok = False  # what is not durable now is counted, not waited for
        journal.closed = True
        journal.seal()
        deadline = time.monotonic() + self._settings.flush
        # Wait on a stream that works, or that still owes acks for batches it took.
        while (journal.memory or self._inflight) and (self._healthy or (self._inflight and self._in_session)):
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
        await journal.shutdown()

    def status(self) -> dict[str, Any]:
        """Counters for /readyz."""
        journal, spool = self.journal, self.spool
        dropped = Counter(journal.dropped)
        dropped.update(spool.dropped)
        waits = sorted(journal.recent_waits)
        return {
            "stream": "connected" if self._healthy else "disconnected",
            "records": journal.submitted,
            "queued_records": journal.queued(),
            "inflight_batches": len(self._inflight),
            "spooled_batches": spool.held_batches,
            "spooled_records": spool.held_records,
            "spool_bytes": spool.bytes if journal.spool_ok else 0,
            "spool_full_policy": spool.policy,
            "spool_ok": journal.spool_ok,
            "dropped_records": sum(dropped.values()),
            "dropped": {reason: dropped[reason] for reason in sorted(dropped)},
            "not_durable_records": journal.not_durable,
            "spool_errors": dict(spool.errors),
            "corrupt_spool_entries": spool.corrupt_entries,
            "commit_wait_ms": _percentiles(waits),
            "task_restarts": dict(self.restarts),
            "sent_batches": self.counters["sent_batches"],
            "acked_batches": self.counters["acked_batches"],
            "accepted": self.counters["accepted"],
            "duplicates": self.counters["duplicates"],
            "rejected": self.counters["rejected"],
        }

    # -- housekeeping --

    async def _housekeeping(self) -> None:
        settings = self._settings
        period = max(0.005, min(settings.batch_age, settings.spill_after) / 4)
        last_adopt = last_open = time.monotonic()
        journal = self.journal
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            journal.seal_if_old(now)
            if self._inflight:
                oldest = min(b.sent_at for b in self._inflight.values())
                if now - oldest >= settings.ack_timeout:
                    log.warning("usage: no ack for %.1fs; restarting the stream", now - oldest)
                    self._abort.set()
            await journal.spill(now)
            if not journal.spool_ok and now - last_open >= REOPEN_EVERY:
                last_open = now
                await self._open_spool()
            if journal.spool_ok and now - last_adopt >= ADOPT_EVERY:
                last_adopt = now
                if await asyncio.to_thread(self.spool.adopt):
                    journal.wake.set()

    # -- the stream --

    async def _sessions(self) -> None:
        failures = 0
        while True:
            await self._work_waiting()
            acked = await self._session()
            failures = 0 if acked else failures + 1
            if failures:
                delay = min(self._retry_max, RETRY_FIRST * 2 ** min(failures - 1, 16))
                await self._pause(random.uniform(delay / 2, delay))

    async def _pause(self, delay: float) -> None:
        """Sleep ``delay``, cut short when the watch stream comes back (the control plane answers)."""
        cp_up = self._cp_up
        if cp_up is None or cp_up():
            await asyncio.sleep(delay)
            return
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0 and not cp_up():
            await asyncio.sleep(min(PAUSE_POLL, left))

    async def _work_waiting(self) -> None:
        wake = self.journal.wake
        while True:
            wake.clear()
            if self.journal.has_work():
                return
            await wake.wait()

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
                batch.sent_at = time.monotonic()
                # In flight before the first await below: a cancelled or failed send requeues it.
                self._inflight[self._sequence] = batch
                self.counters["sent_batches"] += 1
                batch.sends += 1
                await call.write(batch.encoded(self._node_id, self._sequence))
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

    async def _next_batch(self, reader: asyncio.Task[None]) -> Batch | None:
        """The next batch to write; None when the stream failed, was aborted, or has been idle a while."""
        idle = max(1.0, self._settings.batch_age * 2)
        wake = self.journal.wake
        while True:
            wake.clear()
            if reader.done() or self._abort.is_set():
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    log.info("usage stream failed: %s", _why(reader.exception()))
                return None
            if len(self._inflight) < WINDOW:
                batch = await self.journal.take(self._settings.batch_size)
                if batch is not None:
                    return batch
            waits = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(self._abort.wait())]
            try:
                done, _ = await asyncio.wait(
                    [*waits, reader],
                    timeout=None if self._inflight or self.journal.queued() else idle,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                for w in waits:
                    w.cancel()
            if not done:
                return None

    async def _read_acks(
        self, call: grpc.aio.StreamStreamCall[bytes, node_pb2.UsageAck]
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
            await self.journal.acked(batch)
            self._progress.set()
            self.journal.wake.set()

    def _requeue_inflight(self) -> None:
        """Unacknowledged batches go back to the front of the queue (their spool entries stay claimed)."""
        back = [self._inflight.pop(seq) for seq in sorted(self._inflight)]
        self.journal.requeue(back)
        self._progress.set()


def _percentiles(waits: list[float]) -> dict[str, float]:
    if not waits:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}

    def pick(q: float) -> float:
        return round(waits[min(len(waits) - 1, int(q * len(waits)))] * 1000, 2)

    return {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code().name
    return type(exc).__name__
