"""gRPC health that follows the database.

Every ``interval`` seconds one cheap query (the change log's current revision)
runs with a timeout. After ``FAILURES_TO_FLIP`` consecutive failures every
DB-backed health service (``""`` and the ``odock.v1`` services) turns
NOT_SERVING, so readiness probes and load balancers stop sending new work to a
replica that cannot answer it; the first success turns them SERVING again.
``LIVENESS_SERVICE`` is left alone: it says only that the process is alive
(NOT_SERVING once draining), so a database outage never makes Kubernetes
restart every control plane, which would only cut the data planes' watches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from grpc_health.v1 import health, health_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from control_plane.store import changes

log = logging.getLogger("odock.control_plane.dbcheck")

LIVENESS_SERVICE = "liveness"
FAILURES_TO_FLIP = 2
MAX_TIMEOUT_SECONDS = 5.0
MIN_TIMEOUT_SECONDS = 1.0


class CheckObserver(Protocol):
    """Receives each check's result and each flip (control_plane.metrics.ControlPlaneMetrics)."""

    def database_checked(self, ok: bool, revision: int | None) -> None: ...

    def serving_changed(self, serving: bool) -> None: ...


class DatabaseCheck:
    """Owns the periodic check task; ``start()`` after the server serves, ``stop()`` before draining."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        health_servicer: health.aio.HealthServicer,
        services: Sequence[str],
        interval: float,
        observer: CheckObserver | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._health = health_servicer
        self._services = tuple(services)
        self._interval = interval
        self._timeout = max(MIN_TIMEOUT_SECONDS, min(interval, MAX_TIMEOUT_SECONDS))
        self._observer = observer
        self._failures = 0
        self._serving = True
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        """True while the DB-backed services report SERVING."""
        return self._serving

    async def start(self) -> None:
        """Report SERVING (the database just answered: the server started) and begin checking."""
        await self._set(True)
        self._task = asyncio.create_task(self._run(), name="odock-dbcheck")

    async def stop(self) -> None:
        """Stop checking (health is then left to graceful shutdown)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def check_once(self) -> bool:
        """Run one check, flip health when due; True when the database answered."""
        revision: int | None = None
        try:
            async with asyncio.timeout(self._timeout):
                async with self._sessionmaker() as session:
                    revision = await changes.current_revision(session)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure counts; the class name says enough
            self._failures += 1
            log.info("database check failed (%s), %d in a row", type(exc).__name__, self._failures)
        else:
            self._failures = 0
        ok = revision is not None
        if self._observer is not None:
            self._observer.database_checked(ok, revision)
        if ok and not self._serving:
            log.warning("database reachable again: health SERVING")
            await self._set(True)
        elif not ok and self._serving and self._failures >= FAILURES_TO_FLIP:
            log.warning("database unreachable (%d checks failed): health NOT_SERVING", self._failures)
            await self._set(False)
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def _set(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._services:
            await self._health.set(name, status)
        self._serving = serving
        if self._observer is not None:
            self._observer.serving_changed(serving)
