"""Database work off the event loop: a synchronous engine driven from a few worker threads.

The control plane serves every RPC on one asyncio loop. Usage ingestion binds
thousands of rows per batch and retention deletes thousands per transaction;
done on the loop, that CPU would sit between every await of a lease RPC. In a
worker thread the loop gets the interpreter back at least every switch
interval (5 ms) and whenever the driver waits on the database, and the work
uses connections of its own (``db.make_sync_engine``).

With ``idle_cpu`` (ODOCK_USAGE_INGEST_CPU_PRIORITY=idle) the worker threads run under
Linux's ``SCHED_IDLE`` policy: they get a core only when no ordinary thread wants it, and
a waking ordinary thread takes it from them at once. On a core shared with
latency-sensitive processes, ingest's milliseconds-long bursts of CPU otherwise delay
each of their wakeups by up to a scheduler slice (issue 16, docs/benchmarks.md: chat
c=1 added p99 through a gateway whose control plane shares the load core, 2.5-2.8 ms at
normal priority, 1.1-1.5 ms idle). Not the default: on a core that is never idle the
threads barely run (70 records/s instead of 20,000 next to a busy loop), and while one
of them is preempted holding the interpreter the event loop waits too (health checks up
to 1.8 s). The event loop's own thread always keeps its normal priority.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine

from control_plane.store import db

log = logging.getLogger("odock.control_plane.store")

T = TypeVar("T")
P = ParamSpec("P")


class _IdleThreads:
    """Puts each worker thread of a pool under SCHED_IDLE as it starts (the pool's initializer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._warned = False

    def __call__(self) -> None:
        try:
            # pid 0: the calling thread (Linux schedules threads, not processes).
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (AttributeError, OSError) as exc:  # not Linux, or a seccomp profile refusing it
            with self._lock:
                if self._warned:
                    return
                self._warned = True
            log.warning("usage ingest threads keep normal CPU priority: SCHED_IDLE unavailable (%s)", exc)


class BackgroundDatabase:
    """Runs functions in its worker threads, optionally inside a transaction of its engine."""

    def __init__(self, engine: Engine, workers: int, *, idle_cpu: bool = False) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="odock-db", initializer=_IdleThreads() if idle_cpu else None
        )

    @classmethod
    def open(cls, url: str, workers: int, *, idle_cpu: bool = False) -> BackgroundDatabase:
        """An engine with one connection per worker thread (``idle_cpu``: threads under SCHED_IDLE)."""
        return cls(db.make_sync_engine(url, workers), workers, idle_cpu=idle_cpu)

    @property
    def is_postgres(self) -> bool:
        """True on PostgreSQL."""
        return db.is_postgres(self.engine)

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` in a worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def transaction(self, fn: Callable[[Connection], T]) -> T:
        """``fn(conn)`` inside one transaction (committed when it returns) in a worker thread."""
        return await self.call(self._in_transaction, fn)

    def _in_transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    def close(self) -> None:
        """Wait for running work, then close the connections (blocking; call it last)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.engine.dispose()
