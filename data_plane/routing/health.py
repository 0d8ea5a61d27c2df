"""The deployments' health on this worker, and the plans that use it (docs/routing.md).

One ``Health`` per worker process, on its event loop: no locks, no I/O. Health
is kept only for models that were routed (several deployments, or fallbacks),
least recently routed first out: a model not routed for ``idle_seconds`` is
forgotten lazily (a couple of checks per plan), and at most ``max_tracked``
deployments are kept whatever the configuration holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from data_plane.governance.domain import Deployment, Route
from data_plane.routing.breaker import CLOSED, OPEN, STATE_NAMES, DeploymentHealth
from data_plane.routing.plan import Plan, RoutedPlan, SinglePlan
from data_plane.settings import RoutingSettings

DEFAULTS_MAX = 20_000  # routes whose implicit "default" deployment is kept (the route cache's default size)
DEFAULT_NAME = "default"


class DeploymentState(NamedTuple):
    """One tracked deployment, for metrics and status."""

    model: str
    deployment: str
    state: str  # closed, open or half_open
    cooling_until: float | None  # clock time it comes back into choice (breaker or Retry-After); None: now
    failures: int  # consecutive


class _Model:
    __slots__ = ("entries", "name", "seen", "source")

    def __init__(self, name: str, source: tuple[Deployment, ...], entries: tuple[tuple[Deployment, DeploymentHealth], ...]) -> None:  # fmt: skip
        self.name = name
        self.source = source  # the route's deployments these entries were built from
        self.entries = entries
        self.seen = 0.0


class Health:
    """Every routed deployment's breaker, cooldown and weighted-choice state on this worker."""

    def __init__(self, settings: RoutingSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._models: dict[str, _Model] = {}  # least recently routed first
        self._tracked = 0
        self._defaults: dict[int, tuple[Route, tuple[Deployment, ...]]] = {}
        # Breaker state changes since the metrics last took them: (model name, deployment) -> state.
        self.changes: dict[tuple[str, str], int] = {}

    def plan(self, route: Route) -> Plan:
        """A plan for one client request on ``route``."""
        deps = route.deployments
        if not route.fallbacks and len(deps) <= 1:  # not routed: the hot path of most requests
            return SinglePlan(deps[0] if deps else self._default(route)[0])
        if not deps:
            deps = self._default(route)
        model = self._model(route.model_id, route.model_name, deps)
        return RoutedPlan(model.entries, self.settings, self.clock, self.changes)

    def snapshot(self) -> list[DeploymentState]:
        """Every tracked deployment's state now."""
        now = self.clock()
        out = []
        for model in self._models.values():
            for _, h in model.entries:
                state = h.state
                back = h.cool_until if h.cool_until > now else None
                if state == OPEN:
                    if h.open_until > now:
                        back = max(back or 0.0, h.open_until)
                    else:
                        state = 2  # past its cooldown: half-open on the next look
                out.append(DeploymentState(model.name, h.name, STATE_NAMES[state], back, h.failures))
        return out

    def pop_changes(self) -> dict[tuple[str, str], int]:
        """Breaker state changes since the last call (the metrics' gauge takes them)."""
        changes, self.changes = self.changes, {}
        return changes

    @property
    def tracked(self) -> int:
        """Deployments whose health is kept."""
        return self._tracked

    def _default(self, route: Route) -> tuple[Deployment, ...]:
        """The one deployment of a route that names none: its own fields, built once per Route object."""
        key = id(route)
        entry = self._defaults.get(key)
        if entry is not None and entry[0] is route:
            return entry[1]
        dep = Deployment(
            name=DEFAULT_NAME, base_url=route.base_url, upstream_slug=route.upstream_slug, timeout=route.timeout,
            credential_id=route.credential_id, secret=route.secret,
        )  # fmt: skip
        if len(self._defaults) >= DEFAULTS_MAX:
            del self._defaults[next(iter(self._defaults))]
        self._defaults[key] = (route, (dep,))  # the route kept alive: its id cannot be reused meanwhile
        return (dep,)

    def _model(self, model_id: str, name: str, deps: tuple[Deployment, ...]) -> _Model:
        models = self._models
        model = models.pop(model_id, None)
        if model is None or model.source is not deps or model.name != name:
            model = self._build(model, name, deps)
        now = self.clock()
        model.seen = now
        models[model_id] = model  # most recently routed last
        self._trim(now)
        return model

    def _build(self, old: _Model | None, name: str, deps: tuple[Deployment, ...]) -> _Model:
        """Entries for ``deps`` in try order, keeping the health of deployments that stay (same name)."""
        kept: dict[str, DeploymentHealth] = {}
        if old is not None:
            self._tracked -= len(old.entries)
            if old.name == name:
                kept = {h.name: h for _, h in old.entries}
            else:
                self._forget(old)
        order = sorted(range(len(deps)), key=lambda i: deps[i].priority)
        entries = []
        for i in order:
            dep = deps[i]
            health = kept.get(dep.name)
            if health is None:
                health = kept[dep.name] = DeploymentHealth(name, dep.name, self.settings)
            entries.append((dep, health))
        self._tracked += len(entries)
        return _Model(name, deps, tuple(entries))

    def _trim(self, now: float) -> None:
        models = self._models
        idle_before = now - self.settings.idle_seconds
        for _ in range(2):  # amortised: each routed plan retires up to two idle models
            oldest = next(iter(models.values()))
            if oldest.seen >= idle_before:
                break
            self._drop()
        while self._tracked > self.settings.max_tracked and len(models) > 1:
            self._drop()
        changes = self.changes
        while len(changes) > self.settings.max_tracked:  # nobody takes them (no metrics): stay bounded
            del changes[next(iter(changes))]

    def _drop(self) -> None:
        models = self._models
        model = models.pop(next(iter(models)))
        self._tracked -= len(model.entries)
        self._forget(model)

    def _forget(self, model: _Model) -> None:
        for _, h in model.entries:
            if h.state != CLOSED:  # its gauge goes back to closed, as it would start again
                self.changes[(h.model, h.name)] = CLOSED
