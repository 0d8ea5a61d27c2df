"""Usage retention: raw records and hourly rollups older than their retention are deleted.

Raw records (about 370 bytes a request on SQLite, docs/operations.md) are kept
``ODOCK_USAGE_RETENTION_DAYS`` (30), rollups ``ODOCK_USAGE_ROLLUP_RETENTION_DAYS``
(400): totals, the monthly limit counters' seeds and the budget history come
from the rollups, so they outlive the records. 0 keeps either forever.

A supervised task runs every ``ODOCK_USAGE_PRUNE_SECONDS``. Each run deletes in
transactions of at most ``batch_rows`` rows (oldest first, found through the
``time`` / ``hour`` indexes), with a pause between them, each in a worker
thread on the background engine and taking an ingest slot that defers to lease
and resolve RPCs (usage/priority.py). On SQLite a batch holds the write lock
for a few milliseconds; a backlog (the first run on an old database) is worked
off batch by batch, never in one long transaction.

Several PostgreSQL replicas: every batch transaction first takes
``pg_try_advisory_xact_lock``; a replica that cannot (another one is deleting)
ends its run there. Running on all replicas is therefore safe and cheap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Connection

from control_plane.store.background import BackgroundDatabase
from control_plane.store.repositories import usage_writes
from control_plane.usage.priority import GovernanceFirst

log = logging.getLogger("odock.control_plane.usage.retention")

BATCH_ROWS = 5000
PAUSE_SECONDS = 0.05
# pg_try_advisory_xact_lock key: one replica deletes at a time ("odock" + 1; migrations use "odock").
RETENTION_LOCK_KEY = 0x6F646F636B + 1
# After a failed run, the next one is tried after this (doubling up to the interval).
RETRY_SECONDS = 5.0


@dataclass
class PruneReport:
    """What one run deleted: rows per transaction, and whether another replica held the lock."""

    records: int = 0
    rollups: int = 0
    batches: list[int] = field(default_factory=list)
    yielded_to_replica: bool = False


@dataclass(frozen=True)
class RetentionPolicy:
    """Days to keep (0 = forever) and the batching of the deletes."""

    record_days: float
    rollup_days: float
    batch_rows: int = BATCH_ROWS
    pause_seconds: float = PAUSE_SECONDS


async def prune(
    store: BackgroundDatabase,
    policy: RetentionPolicy,
    priority: GovernanceFirst | None = None,
    *,
    now: datetime | None = None,
) -> PruneReport:
    """One retention run: records, then rollups, batch by batch (see the module docstring)."""
    now = now or datetime.now(UTC)
    report = PruneReport()
    jobs: list[tuple[str, Callable[[Connection], int | None]]] = []
    rows, lock = policy.batch_rows, RETENTION_LOCK_KEY
    if policy.record_days > 0:
        cutoff = now - timedelta(days=policy.record_days)
        jobs.append(("records", functools.partial(
            usage_writes.delete_records, before=cutoff, limit=rows, lock_key=lock)))  # fmt: skip
    if policy.rollup_days > 0:
        hour = int((now - timedelta(days=policy.rollup_days)).timestamp() // 3600)
        jobs.append(("rollups", functools.partial(
            usage_writes.delete_rollups, before_hour=hour, limit=rows, lock_key=lock)))  # fmt: skip
    for table, job in jobs:
        while True:
            if priority is None:
                deleted = await store.transaction(job)
            else:
                async with priority.background():
                    deleted = await store.transaction(job)
            if deleted is None:
                report.yielded_to_replica = True
                return report
            if deleted:
                log.debug("usage retention: deleted a batch of %d %s", deleted, table)
                report.batches.append(deleted)
                setattr(report, table, getattr(report, table) + deleted)
            if deleted < policy.batch_rows:
                break
            await asyncio.sleep(policy.pause_seconds)
    return report


class RetentionTask:
    """Runs ``prune`` every ``interval`` seconds until stopped; a failed run is logged and retried."""

    def __init__(
        self,
        store: BackgroundDatabase,
        policy: RetentionPolicy,
        priority: GovernanceFirst | None,
        interval: float,
        *,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self._store = store
        self._retry = retry_seconds
        self._policy = policy
        self._priority = priority
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.last: PruneReport | None = None

    def start(self) -> None:
        """Start the loop (no-op when nothing is ever pruned)."""
        if self._policy.record_days <= 0 and self._policy.rollup_days <= 0:
            return
        self._task = asyncio.create_task(self._run(), name="usage-retention")

    async def stop(self) -> None:
        """Cancel the loop; a running batch's transaction finishes in its thread."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        # The first run soon after start (a restarted replica catches up), later ones every interval.
        delay = min(self._interval, 30.0)
        retry = self._retry
        while True:
            await asyncio.sleep(delay)
            began = time.monotonic()
            try:
                report = await prune(self._store, self._policy, self._priority)
            except Exception as exc:  # noqa: BLE001 - the task outlives any one failure
                log.warning("usage retention run failed (%s); retrying in %.0fs", type(exc).__name__, retry)
                delay, retry = retry, min(retry * 2, self._interval)
                continue
            self.runs += 1
            self.last = report
            retry, delay = self._retry, self._interval
            if report.records or report.rollups:
                log.info(
                    "usage retention: deleted %d records and %d rollups in %d batches (%.1fs)",
                    report.records, report.rollups, len(report.batches), time.monotonic() - began,
                )  # fmt: skip
