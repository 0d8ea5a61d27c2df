"""Storing usage batches from the nodes (NodeService.ReportUsage).

One transaction per slice of a batch (a batch of up to ``SLICE_ROWS`` records,
the data plane's default, is one slice; see priority.py for why larger ones are
cut): the records are inserted with ``ON CONFLICT
(request_id) DO NOTHING RETURNING request_id`` (see store/repositories/usage_writes.py), then the hourly
rollups are bumped for exactly the records that statement returned, i.e. the
ones actually inserted. A replay (same request id, whatever its attempt or
node) inserts nothing and so adds nothing to the rollups, which is also why a
batch that failed after some of its slices committed can simply be sent again.
The ack is built only after the last commit. A batch is validated and written column by
column (columns.py; records.prepare record by record only when some record is bad). Rows and rollup keys are written in sorted order so two
batches touching the same keys lock them in the same order (no deadlock
between nodes); PostgreSQL deadlock or serialisation failures are retried anyway.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.errors import Unavailable
from control_plane.store.background import BackgroundDatabase
from control_plane.store.repositories import usage_writes
from control_plane.store.tables import utcnow
from control_plane.usage import columns
from control_plane.usage.columns import Columns
from control_plane.usage.priority import GovernanceFirst
from control_plane.usage.records import ROLLUP_COUNTERS, BadRecord, Prepared, prepare
from odock.v1 import node_pb2

log = logging.getLogger("odock.control_plane.usage")

# Attempts of a whole batch transaction on a PostgreSQL deadlock / serialisation failure.
TRANSACTION_ATTEMPTS = 4
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

STORE_UNAVAILABLE = "usage store unavailable; the batch was not stored, send it again"

Sessions = async_sessionmaker[AsyncSession]
# Where batches are stored: sessions on the event loop, or a worker-thread engine (the server's choice).
Target = Sessions | BackgroundDatabase


class StoreUnavailable(Unavailable):
    """The database could not take the batch now; nothing was stored."""


def rollup_deltas(rows: Columns, inserted: set[str]) -> dict[str, list[Any]]:
    """Per rollup key, the requests and counter sums of the ``inserted`` rows: columns, sorted by key."""
    v = rows.values
    acc: dict[tuple[Any, ...], list[int]] = {}
    keys = zip(v["org_id"], rows.hours, v["key_id"], v["model_name"], v["outcome"], strict=True)
    counters = zip(*(v[name] for name in ROLLUP_COUNTERS), strict=True)
    everything = len(inserted) == len(rows)
    for request_id, key, sums in zip(v["request_id"], keys, counters, strict=True):
        if not everything and request_id not in inserted:
            continue
        total = acc.get(key)
        if total is None:
            acc[key] = [1, *sums]
        else:
            total[0] += 1
            for i, value in enumerate(sums, start=1):
                total[i] += value
    if not acc:
        return {}
    ordered = sorted(acc)
    out = dict(zip(usage_writes.ROLLUP_KEY, map(list, zip(*ordered, strict=True)), strict=True))
    sums_by_column = zip(*(acc[k] for k in ordered), strict=True)
    out.update(zip(("requests", *ROLLUP_COUNTERS), map(list, sums_by_column), strict=True))
    return out


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _write(conn: Connection, rows: Columns) -> int:
    """Insert ``rows`` and bump the rollups of those actually inserted; how many were."""
    inserted = usage_writes.insert_record_columns(conn, rows.values, len(rows))
    deltas = rollup_deltas(rows, inserted)
    usage_writes.add_rollup_columns(conn, deltas, len(deltas.get("hour", ())))
    return len(inserted)


async def _transact(target: Target, rows: Columns) -> int:
    if isinstance(target, BackgroundDatabase):
        return await target.transaction(functools.partial(_write, rows=rows))
    async with target.begin() as session:
        return await session.run_sync(lambda s: _write(s.connection(), rows))


async def _store(target: Target, rows: Columns) -> int:
    """Insert ``rows`` and bump rollups in one transaction; the number inserted (after commit)."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            return await _transact(target, rows)
        except DBAPIError as exc:
            if _retryable(exc) and attempt < TRANSACTION_ATTEMPTS:
                log.info("usage batch: transaction retried after %s", getattr(exc.orig, "sqlstate", "?"))
                continue
            if isinstance(exc, OperationalError | InterfaceError) or _retryable(exc):
                log.warning("usage batch not stored: %s", type(exc.orig).__name__)
                raise StoreUnavailable(STORE_UNAVAILABLE) from exc
            raise
        except PoolTimeout as exc:
            raise StoreUnavailable(STORE_UNAVAILABLE) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _prepare_batch(batch: node_pb2.UsageBatch) -> tuple[Columns, int, int]:
    """Valid records sorted by request id (first copy of each), duplicates within the batch, rejected."""
    receive_time = utcnow()
    fast = columns.from_batch(batch.records, batch.node_id, receive_time, batch.attempt)
    if fast is not None:  # every record valid: the common case
        rows, duplicates = fast
        return rows, duplicates, 0
    unique: dict[str, Prepared] = {}
    duplicates = rejected = 0
    for index, record in enumerate(batch.records):
        try:
            prepared = prepare(record, batch.node_id, receive_time, batch.attempt)
        except BadRecord as exc:
            rejected += 1
            # Ids and field names only: records carry no secrets, but keep logs small.
            log.warning(
                "usage record rejected: node=%r batch=%d index=%d request_id=%r: %s",
                batch.node_id[:128], batch.sequence, index, record.request_id[:128], exc,
            )  # fmt: skip
            continue
        if prepared.values["request_id"] in unique:
            duplicates += 1
            continue
        unique[prepared.values["request_id"]] = prepared
    return columns.from_prepared([unique[k] for k in sorted(unique)]), duplicates, rejected


async def ingest_batch(
    target: Target, batch: node_pb2.UsageBatch, priority: GovernanceFirst | None = None
) -> node_pb2.UsageAck:
    """Store one batch idempotently, slice by slice; the ack, built only after the last commit.

    ``target`` is an async sessionmaker (work on the event loop) or, as the
    server runs it, a BackgroundDatabase (validation and writes in its threads).
    Raises StoreUnavailable (UNAVAILABLE) when the database cannot take it: the
    node should send the batch again (slices already stored count as duplicates then).
    """
    if isinstance(target, BackgroundDatabase):
        rows, duplicates, rejected = await target.call(_prepare_batch, batch)
    else:
        rows, duplicates, rejected = _prepare_batch(batch)
    accepted = 0
    step = priority.slice_rows if priority is not None else max(1, len(rows))
    for start in range(0, len(rows), step):
        part = rows.slice(start, start + step)
        if priority is None:
            accepted += await _store(target, part)
            continue
        async with priority.ingest_slice():
            accepted += await _store(target, part)
    return node_pb2.UsageAck(
        sequence=batch.sequence,
        accepted=accepted,
        duplicates=duplicates + len(rows) - accepted,
        rejected=rejected,
    )


class IngestObserver(Protocol):
    """Counts batches for the metrics (control_plane.metrics.ControlPlaneMetrics)."""

    def batch_stored(self, ack: node_pb2.UsageAck) -> None: ...

    def batch_failed(self) -> None: ...


class UsageIngestor:
    """Serves one ReportUsage stream: each batch is stored, then acked, in arrival order."""

    def __init__(
        self,
        target: Target,
        observer: IngestObserver | None = None,
        priority: GovernanceFirst | None = None,
    ) -> None:
        self._target = target
        self._observer = observer
        self._priority = priority

    async def handle(
        self, request_iterator: AsyncIterator[node_pb2.UsageBatch]
    ) -> AsyncIterator[node_pb2.UsageAck]:
        """Acks for the batches of one stream, each sent after its batch committed."""
        async for batch in request_iterator:
            try:
                ack = await ingest_batch(self._target, batch, self._priority)
            except Exception:
                if self._observer is not None:
                    self._observer.batch_failed()
                raise
            if self._observer is not None:
                self._observer.batch_stored(ack)
            yield ack
