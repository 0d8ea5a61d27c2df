"""Routes, deployments and a fake clock for the routing tests."""

from __future__ import annotations

from dataclasses import replace

from data_plane.governance.domain import Deployment, Route
from data_plane.routing import Health
from data_plane.settings import RoutingSettings


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def dep(name: str, weight: int = 1, priority: int = 0) -> Deployment:
    return Deployment(
        name=name, base_url=f"https://{name}.example", upstream_slug="slug", timeout=30.0, credential_id=f"cred-{name}",
        secret=b"sk-" + name.encode(), weight=weight, priority=priority,
    )  # fmt: skip


def route(
    *deps: Deployment, model_id: str = "m1", name: str = "gpt", fallbacks: tuple[str, ...] = ()
) -> Route:
    return Route(
        org_id="org", model_id=model_id, model_name=name, family=1, upstream_slug="top-slug",
        base_url="https://top.example", timeout=12.0, enabled=True, credential_id="cred-top", secret=b"sk-top",
        deployments=tuple(deps), fallbacks=fallbacks,
    )  # fmt: skip


def health(clock: Clock, **settings: float) -> Health:
    return Health(replace(RoutingSettings(), **settings), clock)  # type: ignore[arg-type]


def pick(h: Health, r: Route) -> str:
    """One request that succeeds on the first deployment handed out; its name."""
    plan = h.plan(r)
    d = plan.next()
    assert d is not None
    plan.succeeded(d, 0.01)
    plan.finish()
    return d.name


def fail(
    h: Health, r: Route, times: int = 1, *, status: int | None = 500, retry_after: float | None = None
) -> list[str]:
    """``times`` requests whose first attempt fails; the names they were handed."""
    names = []
    for _ in range(times):
        plan = h.plan(r)
        d = plan.next()
        assert d is not None
        plan.failed(d, retry_after, status=status)
        plan.finish()
        names.append(d.name)
    return names
