"""The watch stream: applies control-plane invalidations to the cache as they arrive.

Each (re)connection starts "from now" and flushes the whole cache on its first
event, so nothing that changed while the stream was down survives. A revision
gap, a Reset, or a heartbeat announcing revisions we never saw also flushes.
No event for ``watch_idle`` seconds means the stream is dead: it is cancelled
and reopened with jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

import grpc
from odock.v1 import node_pb2

from data_plane.governance.cache import GovernanceCache
from data_plane.governance.client import NodeClient
from data_plane.governance.types import Link
from data_plane.settings import Settings

log = logging.getLogger("odock.data_plane.watch")

_KIND = node_pb2.InvalidationKind


class LimitEvents(Protocol):
    """What the limiter hears from the watch stream."""

    def exhausted(self, org_id: str, key_id: str) -> None:
        """A monthly/lifetime limit of the org (key_id empty) or key ran out."""

    def changed(self, org_id: str, key_id: str) -> None:
        """The org's (key_id empty) or key's settings changed: forget cached answers."""

    def flushed(self) -> None:
        """Everything may have changed (reconnect, reset, gap)."""


class Watcher:
    """Owns the watch stream and the link status it implies."""

    def __init__(
        self,
        client: NodeClient,
        cache: GovernanceCache,
        link: Link,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        *,
        limits: LimitEvents | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._link = link
        self._idle = settings.timeouts.watch_idle
        self._backoff_max = settings.timeouts.reconnect_max
        self._clock = clock
        self._limits = limits
        self.connected_event = asyncio.Event()

    async def run(self) -> None:
        """Keep the stream open forever (cancel to stop)."""
        attempt = 0
        while True:
            healthy = await self._session()
            attempt = 0 if healthy else attempt + 1
            self._link.reconnects += 1
            # full jitter: spreads a fleet's reconnects after a control-plane restart
            delay = random.uniform(0, min(self._backoff_max, 0.1 * 2 ** min(attempt, 16)))
            await asyncio.sleep(delay)

    async def _session(self) -> bool:
        """One stream, until it fails; True if it delivered at least one event."""
        call = self._client.watch()
        got_event = False
        try:
            while True:
                async with asyncio.timeout(self._idle):
                    event = await call.read()
                if event is grpc.aio.EOF:
                    log.warning("watch stream ended by the control plane")
                    return got_event
                assert isinstance(event, node_pb2.WatchEvent)
                if not got_event:
                    got_event = True
                    self._flush("connected", event.revision)
                    self._link.connected = True
                    self._link.ever_connected = True
                    self.connected_event.set()
                self._link.last_contact = self._clock()
                self._apply(event)
        except TimeoutError:
            log.warning("watch stream idle for %.1fs; reconnecting", self._idle)
            return got_event
        except grpc.aio.AioRpcError as exc:
            log.warning("watch stream failed: %s", exc.code().name)
            return got_event
        finally:
            self._link.connected = False
            self.connected_event.clear()
            call.cancel()

    def _flush(self, why: str, revision: int) -> None:
        self._cache.flush()
        if self._limits is not None:
            self._limits.flushed()
        self._link.revision = revision
        self._link.flushes += 1
        log.info("cache flushed (%s) at revision %d", why, revision)

    def _apply(self, event: node_pb2.WatchEvent) -> None:
        which = event.WhichOneof("event")
        if which == "reset":
            self._flush("reset", event.revision)
            return
        if which == "heartbeat":
            if event.revision != self._link.revision:
                self._flush("heartbeat revision gap", event.revision)
            return
        if which != "invalidation":
            return
        if event.revision <= self._link.revision:
            return  # already covered (the connect-time flush, or a duplicate)
        if event.revision != self._link.revision + 1:
            self._flush("revision gap", event.revision)
            return
        self._link.revision = event.revision
        inv = event.invalidation
        if inv.kind == _KIND.INVALIDATION_KIND_LIMIT:
            if self._limits is not None:
                self._limits.exhausted(inv.org_id, inv.key_id)
            return
        if self._limits is not None and inv.kind in (
            _KIND.INVALIDATION_KIND_KEY,
            _KIND.INVALIDATION_KIND_ORG,
        ):
            self._limits.changed(inv.org_id, inv.key_id if inv.kind == _KIND.INVALIDATION_KIND_KEY else "")
        if inv.kind == _KIND.INVALIDATION_KIND_KEY:
            self._cache.evict_key(inv.key_id)
        elif inv.kind == _KIND.INVALIDATION_KIND_MODEL:
            self._cache.evict_model(inv.org_id, inv.model_name)
        elif inv.kind == _KIND.INVALIDATION_KIND_CREDENTIAL:
            self._cache.evict_credential(inv.org_id, inv.credential_id)
        elif inv.kind == _KIND.INVALIDATION_KIND_ORG:
            self._cache.evict_org(inv.org_id)
        else:
            self._flush("unknown invalidation kind", event.revision)
