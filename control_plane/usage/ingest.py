"""Storing usage batches from the nodes (NodeService.ReportUsage).

One transaction per batch: the records are inserted with ``ON CONFLICT
(request_id) DO NOTHING RETURNING request_id`` (see bulk.py), then the hourly
rollups are bumped for exactly the records that statement returned, i.e. the
ones actually inserted. A replay (same request id, whatever its attempt or
node) inserts nothing and so adds nothing to the rollups. The ack is built
only after commit. Rows and rollup keys are written in sorted order so two
batches touching the same keys lock them in the same order (no deadlock
between nodes); PostgreSQL deadlock or serialisation failures are retried anyway.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from odock.v1 import node_pb2
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.errors import DomainError
from control_plane.store.tables import utcnow
from control_plane.usage import bulk
from control_plane.usage.records import ROLLUP_COUNTERS, BadRecord, Prepared, prepare

log = logging.getLogger("odock.control_plane.usage")

# Attempts of a whole batch transaction on a PostgreSQL deadlock / serialisation failure.
TRANSACTION_ATTEMPTS = 4
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})

STORE_UNAVAILABLE = "usage store unavailable; the batch was not stored, send it again"

Sessions = async_sessionmaker[AsyncSession]


class StoreUnavailable(DomainError):
    """The database could not take the batch now; nothing was stored."""

    code = grpc.StatusCode.UNAVAILABLE


def rollup_deltas(rows: Sequence[Prepared]) -> list[dict[str, Any]]:
    """Per rollup key, the requests and counter sums of ``rows``, sorted by key."""
    acc: dict[tuple[Any, ...], list[int]] = {}
    for p in rows:
        v = p.values
        key = (v["org_id"], p.hour, v["key_id"], v["model_name"], v["outcome"])
        sums = acc.setdefault(key, [0] * (1 + len(ROLLUP_COUNTERS)))
        sums[0] += 1
        for i, name in enumerate(ROLLUP_COUNTERS, start=1):
            sums[i] += v[name]
    out = []
    for key in sorted(acc):
        sums = acc[key]
        row = dict(zip(bulk.ROLLUP_KEY, key, strict=True))
        row["requests"] = sums[0]
        row.update(zip(ROLLUP_COUNTERS, sums[1:], strict=True))
        out.append(row)
    return out


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


async def _store(sessionmaker: Sessions, rows: list[Prepared]) -> int:
    """Insert ``rows`` and bump rollups in one transaction; the number inserted (after commit)."""
    for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
        try:
            async with sessionmaker.begin() as session:
                inserted = await bulk.insert_records(session, [p.values for p in rows])
                await bulk.add_rollups(
                    session, rollup_deltas([p for p in rows if p.values["request_id"] in inserted])
                )
            return len(inserted)
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


def _prepare_batch(batch: node_pb2.UsageBatch) -> tuple[list[Prepared], int, int]:
    """Valid records sorted by request id (first copy of each), duplicates within the batch, rejected."""
    receive_time = utcnow()
    unique: dict[str, Prepared] = {}
    duplicates = rejected = 0
    for index, record in enumerate(batch.records):
        try:
            prepared = prepare(record, batch.node_id, receive_time)
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
    rows = [unique[k] for k in sorted(unique)]
    return rows, duplicates, rejected


async def ingest_batch(sessionmaker: Sessions, batch: node_pb2.UsageBatch) -> node_pb2.UsageAck:
    """Store one batch idempotently in one transaction; the ack, built only after commit.

    Raises StoreUnavailable (UNAVAILABLE) when the database cannot take it:
    then nothing of the batch was stored and the node should send it again.
    """
    rows, duplicates, rejected = _prepare_batch(batch)
    accepted = await _store(sessionmaker, rows) if rows else 0
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

    def __init__(self, sessionmaker: Sessions, observer: IngestObserver | None = None) -> None:
        self._sessionmaker = sessionmaker
        self._observer = observer

    async def handle(
        self, request_iterator: AsyncIterator[node_pb2.UsageBatch]
    ) -> AsyncIterator[node_pb2.UsageAck]:
        """Acks for the batches of one stream, each sent after its batch committed."""
        async for batch in request_iterator:
            try:
                ack = await ingest_batch(self._sessionmaker, batch)
            except Exception:
                if self._observer is not None:
                    self._observer.batch_failed()
                raise
            if self._observer is not None:
                self._observer.batch_stored(ack)
            yield ack
