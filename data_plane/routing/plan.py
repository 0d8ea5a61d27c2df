"""One client request's way through a route's deployments: which to try next, and what came of each try."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from data_plane.governance.domain import Deployment
from data_plane.routing.breaker import HALF_OPEN, DeploymentHealth
from data_plane.routing.choice import choose

if TYPE_CHECKING:
    from data_plane.settings import RoutingSettings

# The health of a model's deployments, in try order (priority, then as configured).
Entries = Sequence[tuple[Deployment, DeploymentHealth]]


class Plan:
    """The deployments one client request tries on one route; this base hands out none.

    Reports (``succeeded``/``failed``) concern attempts that got no byte to the client
    yet; ``finish`` is always called at the end, whatever happened.
    """

    __slots__ = ("attempts",)

    def __init__(self) -> None:
        self.attempts = 0  # deployments handed out so far

    def next(self) -> Deployment | None:
        """The next deployment to try, or None when nothing is left."""
        return None

    def succeeded(self, dep: Deployment, latency: float) -> None:
        """``dep`` answered (2xx, or a 4xx other than 429)."""

    def failed(self, dep: Deployment, retry_after: float | None = None, *, status: int | None = None) -> None:
        """``dep`` gave no usable answer before the first byte (refused, reset, first-byte timeout, 429/5xx).

        ``retry_after`` (seconds, already bounded) keeps it out of choice that long on this
        worker. ``status=429`` marks rate limiting: a cooldown (``retry_after``, else
        ``ODOCK_ROUTING_COOLDOWN_429``) that never counts toward the breaker.
        """

    def finish(self) -> None:
        """The request is over: free a probe slot this plan took and never reported on."""

    def cooling_until(self) -> float | None:
        """After ``next`` gave None: the clock time the earliest untried deployment that was only
        cooling down, open or busy probing comes back (for a 503's Retry-After); else None."""
        return None


class SinglePlan(Plan):
    """A route with one deployment and no fallbacks: that deployment, once, and no health kept."""

    __slots__ = ("_dep",)

    def __init__(self, dep: Deployment) -> None:
        self.attempts = 0
        self._dep = dep

    def next(self) -> Deployment | None:
        if self.attempts:
            return None
        self.attempts = 1
        return self._dep


class RoutedPlan(Plan):
    """Deployments by priority, weighted within a priority, skipping the cooling, open and busy-probing ones."""

    __slots__ = ("_back", "_changes", "_clock", "_entries", "_settings", "_tried")

    def __init__(
        self, entries: Entries, settings: RoutingSettings, clock: Callable[[], float],
        changes: dict[tuple[str, str], int],
    ) -> None:  # fmt: skip
        self.attempts = 0
        self._entries = entries
        self._settings = settings
        self._clock = clock
        self._changes = changes
        self._tried: list[tuple[Deployment, DeploymentHealth]] = []
        self._back: float | None = None

    def next(self) -> Deployment | None:
        now = self._clock()
        changes = self._changes
        tried = self._tried
        tried_health = [h for _, h in tried]
        candidates: list[tuple[Deployment, DeploymentHealth]] = []
        priority = 0
        back: float | None = None
        for pair in self._entries:
            dep, health = pair
            if candidates and dep.priority != priority:
                break  # a better priority has someone to try
            if health in tried_health:  # identity: health has no __eq__
                continue
            if health.available(now, changes):
                candidates.append(pair)
                priority = dep.priority
            else:
                at = health.back_at(now)
                back = at if back is None or at < back else back
        if not candidates:
            self._back = back
            return None
        dep, health = choose(candidates) if len(candidates) > 1 else candidates[0]
        if health.state == HALF_OPEN:
            health.probe = self
        tried.append((dep, health))
        self.attempts += 1
        return dep

    def succeeded(self, dep: Deployment, latency: float) -> None:
        health = self._health_of(dep)
        if health is not None:
            health.succeeded(self._clock(), self, self._changes)

    def failed(self, dep: Deployment, retry_after: float | None = None, *, status: int | None = None) -> None:
        health = self._health_of(dep)
        if health is not None:
            health.failed(self._clock(), self, self._settings, retry_after, status == 429, self._changes)

    def finish(self) -> None:
        for _, health in self._tried:
            health.release(self)

    def cooling_until(self) -> float | None:
        return self._back

    def _health_of(self, dep: Deployment) -> DeploymentHealth | None:
        for tried, health in self._tried:
            if tried is dep:
                return health
        for tried, health in self._tried:
            if tried.name == dep.name:
                return health
        return None
