"""The watch stream: applies control-plane invalidations to the cache as they arrive.

Each (re)connection starts "from now" and flushes the whole cache on its first
event, so nothing that changed while the stream was down survives. A revision
gap, a Reset, or a heartbeat announcing revisions we never saw also flushes.
No event for ``watch_idle`` seconds means the stream is dead: it is cancelled
and reopened.

Reconnecting: the stream is opened wait-for-ready, so while the control plane
is away it waits for the channel, whose own connection attempts are at most
about a second apart (link.py), and starts the moment a connection is up:
the node is back within about a second of the control plane answering again,
however long the outage. Streams that fail *after* connecting (a replica
shutting down, an error answer) are reopened after 50 ms, doubling up to
``ODOCK_RECONNECT_MAX_SECONDS``, jittered. One WARNING per outage (when the
link is lost), the attempts in between at DEBUG, one INFO when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

import grpc

from data_plane.governance.cache import GovernanceCache
from data_plane.governance.domain import Link
from data_plane.governance.link import ControlPlaneLink
from data_plane.settings import Settings
from odock.v1 import node_pb2

log = logging.getLogger("odock.data_plane.watch")

_KIND = node_pb2.InvalidationKind
# First reopen delay after a stream failed once connected (doubles per failure, up to the cap).
FIRST_RETRY_SECONDS = 0.05


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
        client: ControlPlaneLink,
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
        self._outage_logged = False
        self._outage_since = 0.0
        self._attempts = 0

    async def run(self) -> None:
        """Keep the stream open forever (cancel to stop)."""
        attempt = 0
        while True:
            healthy, why = await self._session()
            if healthy or not self._outage_logged:
                # Once per outage: the link was lost (or never came up).
                log.warning("watch stream %s; reconnecting", why)
                self._outage_logged = True
                self._outage_since = self._clock()
                self._attempts = 0
            else:
                log.debug("watch stream attempt failed: %s", why)
            self._attempts += 1
            attempt = 0 if healthy else attempt + 1
            self._link.reconnects += 1
            # 50 ms doubling to the cap; half jitter spreads a fleet without ever waiting the full cap at once.
            cap = min(self._backoff_max, FIRST_RETRY_SECONDS * 2 ** min(attempt, 16))
            await asyncio.sleep(random.uniform(cap / 2, cap))

    async def _session(self) -> tuple[bool, str]:
        """One stream, until it fails; (delivered at least one event, why it ended)."""
        call = self._client.watch()
        got_event = False
        try:
            while True:
                async with asyncio.timeout(self._idle):
                    event = await call.read()
                if event is grpc.aio.EOF:
                    return got_event, "ended by the control plane"
                assert isinstance(event, node_pb2.WatchEvent)
                if not got_event:
                    got_event = True
                    self._connected()
                    self._flush("connected", event.revision)
                    self._link.connected = True
                    self._link.ever_connected = True
                    self.connected_event.set()
                self._link.last_contact = self._clock()
                self._apply(event)
        except TimeoutError:
            return got_event, f"idle for {self._idle:.1f}s"
        except grpc.aio.AioRpcError as exc:
            return got_event, f"failed: {exc.code().name}"
        finally:
            self._link.connected = False
            self.connected_event.clear()
            call.cancel()

    def _connected(self) -> None:
        if self._outage_logged:
            log.info(
                "watch stream reconnected after %.1fs (%d attempts)",
                self._clock() - self._outage_since, self._attempts,
            )  # fmt: skip
        self._outage_logged = False

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
