"""In-process cache of grants, routes and model lists, kept current by the watch stream.

Entries stay valid while the watch stream is connected (invalidations evict
them as they arrive); the TTL is only a backstop. Concurrent misses for one
entry share one RPC (single flight). Unknown, revoked and expired keys are
cached briefly so a flood of bad keys cannot flood the control plane. While
the control plane is unreachable an entry keeps being served as long as the
newest evidence that it is current (its fetch, or the last watch event after
it) is at most ``max_staleness`` old — the Kong model; orgs whose outage
policy is FAIL_CLOSED get 503 instead.

An answer is stored only if no invalidation was applied while it was in flight
or it is at least as new (by change-log revision) as the watch stream: a change
racing the lookup then always evicts it later.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from cachetools import LRUCache, TTLCache

from data_plane.governance.domain import (
    ControlPlaneUnavailable,
    KeyGrant,
    KeyRejected,
    Link,
    ModelSummary,
    Route,
)
from data_plane.settings import CacheSizes

K = TypeVar("K", bound=Hashable)
_MISS = object()
V = TypeVar("V")


class NodeSource(Protocol):
    """What the cache needs from the control plane (ControlPlaneLink in production)."""

    async def resolve_key(self, digest: bytes) -> tuple[KeyGrant, int]: ...

    async def resolve_route(self, org_id: str, model_name: str) -> tuple[Route | None, int]: ...

    async def list_routes(self, org_id: str) -> tuple[list[ModelSummary], int]: ...


@dataclass(frozen=True, slots=True)
class _Entry(Generic[V]):
    value: V
    fetched_at: float


class _Table(LRUCache[K, _Entry[V]]):
    """An LRU table with a secondary index of tags (org, key id, credential) for eviction."""

    def __init__(self, maxsize: int, tags: Callable[[K, V], Iterable[str]]) -> None:
        super().__init__(maxsize)
        self._tags_of = tags
        self._index: dict[str, set[K]] = {}

    def __setitem__(self, key: K, value: _Entry[V], *args: Any) -> None:
        if key in self:
            del self[key]
        super().__setitem__(key, value)
        for tag in self._tags_of(key, value.value):
            self._index.setdefault(tag, set()).add(key)

    def __delitem__(self, key: K, *args: Any) -> None:
        entry = super().__getitem__(key)
        for tag in self._tags_of(key, entry.value):
            keys = self._index.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[tag]
        super().__delitem__(key)

    def evict(self, tag: str) -> int:
        """Drop every entry carrying ``tag``; returns how many."""
        keys = list(self._index.get(tag, ()))
        for key in keys:
            self.pop(key, None)
        return len(keys)

    def flush(self) -> None:
        """Drop everything."""
        self.clear()
        self._index.clear()


def _grant_tags(_: bytes, grant: KeyGrant) -> Iterable[str]:
    return (f"key:{grant.key_id}", f"org:{grant.org_id}")


def _route_tags(key: tuple[str, str], route: Route | None) -> Iterable[str]:
    tags = [f"org:{key[0]}", f"model:{key[0]}\x00{key[1]}"]
    if route is not None:
        tags.append(f"cred:{route.credential_id}")
        # every deployment's credential: rotating any of them must drop the route
        tags += (f"cred:{d.credential_id}" for d in route.deployments if d.credential_id != route.credential_id)
    return tags


def _models_tags(org_id: str, _: list[ModelSummary]) -> Iterable[str]:
    return (f"org:{org_id}",)


class GovernanceCache:
    """Grants, routes and model lists for this node, with single-flight misses."""

    def __init__(
        self,
        source: NodeSource,
        link: Link,
        sizes: CacheSizes,
        max_staleness: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._link = link
        self._sizes = sizes
        self._max_staleness = max_staleness
        self._clock = clock
        self._grants: _Table[bytes, KeyGrant] = _Table(sizes.keys, _grant_tags)
        self._routes: _Table[tuple[str, str], Route | None] = _Table(sizes.routes, _route_tags)
        self._models: _Table[str, list[ModelSummary]] = _Table(max(1, sizes.routes // 4), _models_tags)
        self._rejected: TTLCache[bytes, str] = TTLCache(
            sizes.negative, max(sizes.negative_ttl, 1e-6), timer=clock
        )
        self._inflight: dict[Hashable, asyncio.Task[Any]] = {}
        self._generation = 0
        # (table, hit|miss|stale|unavailable) -> lookups, exported by data_plane/metrics.py
        self.lookups: Counter[tuple[str, str]] = Counter()

    # -- lookups -----------------------------------------------------------------

    async def grant(self, digest: bytes) -> KeyGrant:
        """The grant of a key digest; raises KeyRejected or ControlPlaneUnavailable."""
        if self._rejected:
            reason = self._rejected.get(digest)
            if reason is not None:
                self.lookups["key", "hit"] += 1
                raise KeyRejected(reason)
        fresh = self._fresh(self._grants, digest, "key")
        if fresh is not _MISS:
            return fresh  # type: ignore[return-value]
        grant, stale = await self._get(self._grants, digest, ("key", digest), self._fetch_grant(digest))
        if stale and grant.fail_closed:
            raise ControlPlaneUnavailable("the org's outage policy is fail-closed")
        return grant

    async def route(self, org_id: str, model_name: str) -> Route | None:
        """The route of (org, model); None when the org has no such model."""
        key = (org_id, model_name)
        fresh = self._fresh(self._routes, key, "route")
        if fresh is not _MISS:
            return fresh  # type: ignore[return-value]

        async def fetch() -> tuple[Route | None, int]:
            return await self._source.resolve_route(org_id, model_name)

        route, _ = await self._get(self._routes, key, ("route", *key), fetch)
        return route

    async def models(self, org_id: str) -> list[ModelSummary]:
        """Every model of an org."""

        async def fetch() -> tuple[list[ModelSummary], int]:
            return await self._source.list_routes(org_id)

        models, _ = await self._get(self._models, org_id, ("models", org_id), fetch)
        return models

    def _fetch_grant(self, digest: bytes) -> Callable[[], Awaitable[tuple[KeyGrant, int]]]:
        async def fetch() -> tuple[KeyGrant, int]:
            generation = self._generation
            try:
                return await self._source.resolve_key(digest)
            except KeyRejected as exc:
                if generation == self._generation:
                    self._rejected[digest] = exc.reason
                raise

        return fetch

    def _fresh(self, table: _Table[K, V], key: K, kind: str) -> V | object:
        """The entry's value when it is fresh (the hot path: no closures, no awaits), else _MISS."""
        if not self._link.connected:
            return _MISS
        entry = table.get(key)
        if entry is None:
            return _MISS
        fresh_for = self._sizes.negative_ttl if entry.value is None else self._sizes.ttl
        if self._clock() - entry.fetched_at > fresh_for:
            return _MISS
        self.lookups[kind, "hit"] += 1
        return entry.value

    async def _get(
        self,
        table: _Table[K, V],
        key: K,
        flight: Hashable,
        fetch: Callable[[], Awaitable[tuple[V, int]]],
    ) -> tuple[V, bool]:
        now = self._clock()
        kind = str(flight[0]) if isinstance(flight, tuple) else "other"
        entry = table.get(key)
        if entry is not None:
            fresh_for = self._sizes.negative_ttl if entry.value is None else self._sizes.ttl
            if self._link.connected and now - entry.fetched_at <= fresh_for:
                self.lookups[kind, "hit"] += 1
                return entry.value, False
            if not self._link.connected and self._servable_stale(entry, now):
                self.lookups[kind, "stale"] += 1
                return entry.value, True
        try:
            value = await self._single_flight(flight, table, key, fetch)
        except ControlPlaneUnavailable:
            if entry is not None and self._servable_stale(entry, now):
                self.lookups[kind, "stale"] += 1
                return entry.value, True
            self.lookups[kind, "unavailable"] += 1
            raise
        except KeyRejected:
            self.lookups[kind, "miss"] += 1
            raise
        self.lookups[kind, "miss"] += 1
        return value, False

    def _servable_stale(self, entry: _Entry[Any], now: float) -> bool:
        if entry.value is None:
            return now - entry.fetched_at <= self._sizes.negative_ttl
        current_as_of = max(entry.fetched_at, self._link.last_contact or entry.fetched_at)
        return now - current_as_of <= self._max_staleness

    async def _single_flight(
        self, flight: Hashable, table: _Table[K, V], key: K, fetch: Callable[[], Awaitable[tuple[V, int]]]
    ) -> V:
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.create_task(self._fetch_and_store(table, key, fetch))
            self._inflight[flight] = task
            task.add_done_callback(lambda t: self._landed(flight, t))
        # shield: a requester that goes away must not cancel the lookup the others wait for
        result: V = await asyncio.shield(task)
        return result

    def _landed(self, flight: Hashable, task: asyncio.Task[Any]) -> None:
        if self._inflight.get(flight) is task:
            del self._inflight[flight]
        if not task.cancelled():
            task.exception()  # retrieved: the waiters (if any) re-raise it themselves

    async def _fetch_and_store(
        self, table: _Table[K, V], key: K, fetch: Callable[[], Awaitable[tuple[V, int]]]
    ) -> V:
        generation = self._generation
        value, revision = await fetch()
        if generation == self._generation or revision >= self._link.revision:
            table[key] = _Entry(value, self._clock())
        return value

    # -- invalidation (called by the watcher) --------------------------------------

    def evict_key(self, key_id: str) -> None:
        """A key was revoked, rotated, changed or deleted."""
        self._generation += 1
        self._grants.evict(f"key:{key_id}")
        # a newly created key may have been probed (and cached as unknown) before it existed
        self._rejected.clear()

    def evict_model(self, org_id: str, model_name: str) -> None:
        """A model was created, changed or deleted."""
        self._generation += 1
        self._routes.evict(f"model:{org_id}\x00{model_name}")
        self._models.evict(f"org:{org_id}")

    def evict_credential(self, org_id: str, credential_id: str) -> None:
        """A credential was rotated or deleted."""
        self._generation += 1
        self._routes.evict(f"cred:{credential_id}")

    def evict_org(self, org_id: str) -> None:
        """An org changed or was deleted: everything of it goes."""
        self._generation += 1
        for table in (self._grants, self._routes, self._models):
            table.evict(f"org:{org_id}")

    def flush(self) -> None:
        """Forget everything (revision gap, reset, reconnect)."""
        self._generation += 1
        for table in (self._grants, self._routes, self._models):
            table.flush()
        self._rejected.clear()

    def sizes(self) -> dict[str, int]:
        """Entry counts, for the status object."""
        return {
            "grants": len(self._grants),
            "routes": len(self._routes),
            "model_lists": len(self._models),
            "rejected_keys": len(self._rejected),
        }

    async def close(self) -> None:
        """Cancel lookups still in flight."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
