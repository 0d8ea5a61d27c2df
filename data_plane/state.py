"""Per-worker state (governance client, cache, watcher, upstream client) and its lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from data_plane.governance.cache import GovernanceCache
from data_plane.governance.domain import Link
from data_plane.governance.link import ControlPlaneLink
from data_plane.governance.watch import Watcher
from data_plane.limits import Limiter
from data_plane.metrics import METRICS
from data_plane.objects.grpc_ledger import GrpcLedger
from data_plane.objects.ledger import Ledger
from data_plane.routing import Health
from data_plane.settings import RoutingSettings, Settings
from data_plane.upstream import Transport, UpstreamClient
from data_plane.usage.shipper import Shipper

log = logging.getLogger("odock.data_plane")

# Why /readyz says 503 (a fixed set: the public port shows nothing else).
NEVER_CONNECTED = "control_plane_never_connected"
TOO_STALE = "control_plane_stale"  # disconnected longer than ODOCK_MAX_STALENESS_SECONDS


@dataclass
class NodeState:
    """Everything one worker shares across requests."""

    settings: Settings
    client: ControlPlaneLink
    link: Link
    cache: GovernanceCache
    watcher: Watcher
    upstream: UpstreamClient  # the pool: its lifecycle and counts
    transport: Transport  # what the relay sends requests through: the pool
    shipper: Shipper
    limiter: Limiter | None = None  # None: limits not enforced (ODOCK_LIMITS=off)
    # Deployments' breakers and cooldowns on this worker (data_plane.routing; the attempt loop).
    health: Health = field(default_factory=lambda: Health(RoutingSettings()))
    # Who owns which provider file and batch (data_plane.objects; the files and batches endpoints only).
    ledger: Ledger | None = None

    def status(self) -> dict[str, Any]:
        """The detailed status (``GET /readyz/details`` on the metrics listener, never the public
        port: it names orgs and keys): link, staleness, cache, RPC counts, usage and limits."""
        staleness = self.link.staleness(time.monotonic())
        return {
            "ready": self.ready(),
            "reason": self.not_ready_reason(),
            "node_id": self.settings.node_id,
            "control_plane": "connected" if self.link.connected else "disconnected",
            "staleness_seconds": None if staleness is None else round(staleness, 3),
            "max_staleness_seconds": self.settings.max_staleness,
            "revision": self.link.revision,
            "flushes": self.link.flushes,
            "reconnects": self.link.reconnects,
            "cache": self.cache.sizes(),
            "rpc": dict(self.client.calls),
            "usage": self.shipper.status(),
            "limits": self.limiter.status() if self.limiter is not None else {"enabled": False},
        }

    def ready(self) -> bool:
        """Connected, or disconnected but still within the staleness budget."""
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        """Why the node is not ready, from a fixed set (None: ready); the public /readyz shows it."""
        if self.link.connected:
            return None
        staleness = self.link.staleness(time.monotonic())
        if not self.link.ever_connected or staleness is None:
            return NEVER_CONNECTED
        return None if staleness <= self.settings.max_staleness else TOO_STALE

    def public_status(self) -> tuple[int, dict[str, str]]:
        """The public /readyz answer: the status alone, no ids, counts or pools."""
        reason = self.not_ready_reason()
        if reason is None:
            return 200, {"status": "ready"}
        return 503, {"status": "not_ready", "reason": reason}


STATE: web.AppKey[NodeState] = web.AppKey("odock_state", NodeState)


def node_state_ctx(settings: Settings) -> Any:
    """A cleanup context that owns the node state and every background task."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        client = ControlPlaneLink(settings)
        link = Link()
        cache = GovernanceCache(client, link, settings.cache, settings.max_staleness)
        limiter = Limiter(client, link, settings.limits) if settings.limits.enabled else None
        watcher = Watcher(client, cache, link, settings, limits=limiter)
        upstream = UpstreamClient.from_settings(settings)  # keep-alive pool, bounded, no redirects
        shipper = Shipper(
            client, settings.usage, settings.node_id, settings.timeouts.reconnect_max, cp_up=lambda: link.connected
        )
        app[STATE] = NodeState(
            settings, client, link, cache, watcher, upstream, transport=upstream, shipper=shipper, limiter=limiter,
            health=Health(settings.routing), ledger=GrpcLedger(client, settings.timeouts.control_plane_rpc),
        )
        await shipper.start()
        watch_task = asyncio.create_task(watcher.run(), name="odock-watch")
        limits_task = asyncio.create_task(limiter.run(), name="odock-limits") if limiter is not None else None
        metrics = app.get(METRICS)
        metrics_task = (
            asyncio.create_task(metrics.refresh_forever(app[STATE]), name="odock-metrics")
            if metrics is not None
            else None
        )
        try:
            yield
        finally:
            # Handlers are done by now (the runner drained them): every record is submitted.
            await shipper.close()
            if metrics_task is not None and metrics is not None:
                metrics_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await metrics_task
                metrics.refresh(app[STATE])  # the final counts (multi-process: they outlive the worker)
            if limits_task is not None and limiter is not None:
                limits_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await limits_task
                await limiter.close()
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
            await cache.close()
            await upstream.close()
            await client.close()

    return ctx
