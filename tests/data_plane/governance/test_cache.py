"""GovernanceCache against a scripted NodeSource (the seam), with a controllable clock."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from data_plane.governance.cache import GovernanceCache
from data_plane.governance.domain import (
    ControlPlaneUnavailable,
    KeyGrant,
    KeyRejected,
    Link,
    ModelSummary,
    Route,
)
from data_plane.settings import CacheSizes


def grant(key_id: str = "key_1", org: str = "org_1", fail_closed: bool = False) -> KeyGrant:
    return KeyGrant(org, "acme", key_id, True, frozenset(), None, {}, fail_closed)


def route(org: str = "org_1", name: str = "m", cred: str = "cred_1") -> Route:
    return Route(org, "mdl_1", name, 1, "slug", "http://x", 30.0, True, cred, b"secret")


class Source:
    """Answers from dictionaries; counts calls; can be gated or made unavailable."""

    def __init__(self) -> None:
        self.grants: dict[bytes, KeyGrant | str] = {}
        self.routes: dict[tuple[str, str], Route] = {}
        self.calls: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.down = False
        self.revision = 10

    async def _enter(self, name: str) -> None:
        self.calls[name] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ControlPlaneUnavailable(name)

    async def resolve_key(self, digest: bytes) -> tuple[KeyGrant, int]:
        await self._enter("key")
        found = self.grants.get(digest, "unknown")
        if isinstance(found, str):
            raise KeyRejected(found)
        return found, self.revision

    async def resolve_route(self, org_id: str, model_name: str) -> tuple[Route | None, int]:
        await self._enter("route")
        return self.routes.get((org_id, model_name)), self.revision

    async def list_routes(self, org_id: str) -> tuple[list[ModelSummary], int]:
        await self._enter("models")
        return [ModelSummary(n, 1, True, 0) for (o, n) in self.routes if o == org_id], self.revision


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env() -> tuple[Source, Link, Clock, GovernanceCache]:
    source, link, clock = Source(), Link(connected=True, last_contact=1000.0, revision=10), Clock()
    cache = GovernanceCache(source, link, CacheSizes(keys=100, routes=100, negative=100, ttl=60, negative_ttl=5),
                            max_staleness=30, clock=clock)  # fmt: skip
    return source, link, clock, cache


async def test_single_flight_and_hits(env: tuple[Source, Link, Clock, GovernanceCache]) -> None:
    source, _, _, cache = env
    source.grants[b"d"] = grant()
    source.gate = asyncio.Event()
    waiters = [asyncio.create_task(cache.grant(b"d")) for _ in range(50)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one requester leaving does not cancel the shared lookup
    source.gate.set()
    results = await asyncio.gather(*waiters[1:])
    assert all(r.key_id == "key_1" for r in results) and source.calls["key"] == 1
    await cache.grant(b"d")
    assert source.calls["key"] == 1


async def test_unknown_keys_are_negatively_cached_briefly(
    env: tuple[Source, Link, Clock, GovernanceCache],
) -> None:
    source, _, clock, cache = env
    for _ in range(3):
        with pytest.raises(KeyRejected):
            await cache.grant(b"nope")
    assert source.calls["key"] == 1
    clock.now += 6
    with pytest.raises(KeyRejected):
        await cache.grant(b"nope")
    assert source.calls["key"] == 2


async def test_invalidations_evict_by_key_model_credential_and_org(
    env: tuple[Source, Link, Clock, GovernanceCache],
) -> None:
    source, _, _, cache = env
    source.grants[b"d"] = grant()
    source.routes[("org_1", "m")] = route()
    source.routes[("org_1", "n")] = route(name="n", cred="cred_2")
    await cache.grant(b"d")
    await cache.route("org_1", "m")
    await cache.route("org_1", "n")
    cache.evict_key("key_other")
    await cache.grant(b"d")
    assert source.calls["key"] == 1
    cache.evict_key("key_1")
    await cache.grant(b"d")
    assert source.calls["key"] == 2
    cache.evict_credential("org_1", "cred_2")
    await cache.route("org_1", "m")
    await cache.route("org_1", "n")
    assert source.calls["route"] == 3
    cache.evict_model("org_1", "m")
    await cache.route("org_1", "m")
    assert source.calls["route"] == 4
    cache.evict_org("org_1")
    await cache.grant(b"d")
    await cache.route("org_1", "n")
    assert source.calls["key"] == 3 and source.calls["route"] == 5


async def test_answer_racing_an_invalidation_is_not_cached(
    env: tuple[Source, Link, Clock, GovernanceCache],
) -> None:
    source, link, _, cache = env
    source.grants[b"d"] = grant()
    source.gate = asyncio.Event()
    pending = asyncio.create_task(cache.grant(b"d"))
    while not source.calls["key"]:
        await asyncio.sleep(0)
    cache.evict_key("key_1")  # the change arrives while the (older) answer is in flight
    link.revision = 11
    source.gate.set()
    await pending
    source.gate = None
    await cache.grant(b"d")
    assert source.calls["key"] == 2


async def test_outage_serves_cached_entries_up_to_max_staleness(
    env: tuple[Source, Link, Clock, GovernanceCache],
) -> None:
    source, link, clock, cache = env
    source.grants[b"d"] = grant()
    source.grants[b"closed"] = grant("key_2", org="org_2", fail_closed=True)
    await cache.grant(b"d")
    await cache.grant(b"closed")
    source.down, link.connected = True, False
    clock.now += 20
    assert (await cache.grant(b"d")).key_id == "key_1"
    assert source.calls["key"] == 2, "no lookup while disconnected and within staleness"
    with pytest.raises(ControlPlaneUnavailable):
        await cache.grant(b"closed")  # fail-closed org
    with pytest.raises(ControlPlaneUnavailable):
        await cache.grant(b"never-seen")
    clock.now += 11
    with pytest.raises(ControlPlaneUnavailable):
        await cache.grant(b"d")


async def test_ttl_is_a_backstop_that_falls_back_to_stale_on_failure(
    env: tuple[Source, Link, Clock, GovernanceCache],
) -> None:
    source, link, clock, cache = env
    source.grants[b"d"] = grant()
    await cache.grant(b"d")
    clock.now += 61
    link.last_contact = clock.now
    await cache.grant(b"d")
    assert source.calls["key"] == 2
    clock.now += 61
    link.last_contact = clock.now
    source.down = True
    assert (await cache.grant(b"d")).key_id == "key_1"  # refresh failed: still current per the watch


async def test_flush_forgets_everything(env: tuple[Source, Link, Clock, GovernanceCache]) -> None:
    source, _, _, cache = env
    source.grants[b"d"] = grant()
    source.routes[("org_1", "m")] = route()
    await cache.grant(b"d")
    await cache.route("org_1", "m")
    await cache.models("org_1")
    assert cache.sizes() == {"grants": 1, "routes": 1, "model_lists": 1, "rejected_keys": 0}
    cache.flush()
    assert cache.sizes() == {"grants": 0, "routes": 0, "model_lists": 0, "rejected_keys": 0}
