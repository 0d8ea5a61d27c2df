"""Database work off the event loop: a synchronous engine driven from a few worker threads.

The control plane serves every RPC on one asyncio loop. Usage ingestion binds
thousands of rows per batch and retention deletes thousands per transaction;
done on the loop, that CPU would sit between every await of a lease RPC. In a
worker thread the loop gets the interpreter back at least every switch
interval (5 ms) and whenever the driver waits on the database, and the work
uses connections of its own (``db.make_sync_engine``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from sqlalchemy.engine import Connection, Engine

from control_plane.store import db

T = TypeVar("T")
P = ParamSpec("P")


class BackgroundDatabase:
    """Runs functions in its worker threads, optionally inside a transaction of its engine."""

    def __init__(self, engine: Engine, workers: int) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="odock-db")

    @classmethod
    def open(cls, url: str, workers: int) -> BackgroundDatabase:
        """An engine with one connection per worker thread."""
        return cls(db.make_sync_engine(url, workers), workers)

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
