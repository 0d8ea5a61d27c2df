"""Governance before ingestion: one control-plane process's scheduling of database work.

Lease and resolve RPCs answer data-plane requests that are waiting; a usage
batch only needs storing before the node's ack timeout (seconds). So, inside
one process:

- usage ingestion runs on its own engine (its own, small connection pool), so
  a backlog of batches can never take the connections governance RPCs need;
- at most ``ingest_concurrency`` ingest transactions run at once (one on
  SQLite, which has a single writer anyway), whatever the number of node
  streams; the others wait without reading further batches, so gRPC flow
  control pushes back on the nodes;
- a batch is stored in slices of at most ``slice_rows`` rows, one transaction
  each; before each slice, ingestion steps aside while governance RPCs are in
  flight (for at most ``max_defer`` seconds, so a steady lease load never
  starves it). On SQLite, where every write takes the one database-wide write
  lock, a lease then waits for at most one slice instead of a queue of batches;
- the rows are validated, bound and written in worker threads
  (store/background.py), not on the event loop that serves the RPCs.

Several PostgreSQL replicas each schedule their own work; row locks keep
leases and ingestion apart there (they touch different tables).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

DEFAULT_INGEST_CONCURRENCY = 2
# Rows per ingest transaction: a data plane's default batch (500) is two slices.
# On SQLite a slice holds the database's one write lock for a few milliseconds.
SLICE_ROWS = 250
# Longest an ingest slice defers to governance RPCs before it goes anyway.
MAX_DEFER_SECONDS = 0.25


class GovernanceFirst:
    """Counts governance RPCs in flight and holds ingest slices back while there are any."""

    def __init__(
        self,
        ingest_concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        *,
        slice_rows: int = SLICE_ROWS,
        max_defer: float = MAX_DEFER_SECONDS,
    ) -> None:
        if ingest_concurrency < 1 or slice_rows < 1:
            raise ValueError("ingest_concurrency and slice_rows must be >= 1")
        self.ingest_concurrency = ingest_concurrency
        self.slice_rows = slice_rows
        self._max_defer = max_defer
        self._slots = asyncio.Semaphore(ingest_concurrency)
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def governance(self) -> AsyncIterator[None]:
        """Wrap a lease or resolve RPC's database work."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    @contextlib.asynccontextmanager
    async def ingest_slice(self) -> AsyncIterator[None]:
        """Hold one of the ingest slots for one slice's transaction, after letting governance go first."""
        async with self._slots:
            if self._in_flight:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._max_defer):
                        await self._idle.wait()
            yield

    @contextlib.asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Background work (retention pruning) takes an ingest slot and defers to governance alike."""
        async with self.ingest_slice():
            yield
