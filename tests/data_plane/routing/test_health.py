"""The unrouted plan of a one-deployment model, and the bounds on what Health keeps."""

from __future__ import annotations

import pytest

from data_plane.routing import health as health_module
from tests.data_plane.routing.support import Clock, dep, fail, health, pick, route


def test_one_deployment_without_fallbacks_is_not_routed() -> None:
    h = health(Clock())
    r = route(dep("only"))
    for _ in range(20):  # failures change nothing: no breaker, no cooldown, no state
        plan = h.plan(r)
        d = plan.next()
        assert d is r.deployments[0] and plan.attempts == 1
        plan.failed(d, 60.0, status=429)
        assert plan.next() is None and plan.attempts == 1 and plan.cooling_until() is None
        plan.finish()
    assert h.snapshot() == [] and h.tracked == 0 and h.changes == {}


def test_a_route_without_deployments_is_its_own_default_deployment_built_once() -> None:
    h = health(Clock())
    r = route()
    first = h.plan(r).next()
    assert first is not None
    assert (first.name, first.base_url, first.upstream_slug, first.timeout) == (
        "default", "https://top.example", "top-slug", 12.0,
    )  # fmt: skip
    assert (first.credential_id, first.secret, first.weight, first.priority) == ("cred-top", b"sk-top", 1, 0)
    assert h.plan(r).next() is first  # cached per Route object, not rebuilt per request
    other = route()
    assert h.plan(other).next() is not first and h.plan(other).next() == first


def test_the_default_deployments_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_module, "DEFAULTS_MAX", 5)
    h = health(Clock())
    routes = [route(model_id=f"m{i}") for i in range(50)]
    for r in routes:
        assert h.plan(r).next() is not None
    assert len(h._defaults) == 5


def test_one_deployment_with_fallbacks_is_routed() -> None:
    clock = Clock()
    h = health(clock)
    r = route(dep("only"), fallbacks=("other-model",))
    fail(h, r, 3)
    plan = h.plan(r)
    assert plan.next() is None and plan.cooling_until() == clock.now + 30.0
    r = route(fallbacks=("other-model",))  # no deployments: the default one, routed
    assert pick(h, r) == "default" and [s.deployment for s in h.snapshot()] == ["default"]


def test_health_survives_a_new_route_object_and_forgets_removed_deployments() -> None:
    h = health(Clock())
    fail(h, route(dep("a", priority=0), dep("b", priority=1)), 3)
    again = route(dep("a", priority=0), dep("b", priority=1))
    assert {pick(h, again) for _ in range(5)} == {"b"}  # still open
    assert [s.deployment for s in h.snapshot()] == ["a", "b"]
    h.plan(route(dep("b"), dep("c")))
    assert [s.deployment for s in h.snapshot()] == ["b", "c"] and h.tracked == 2


def test_models_not_routed_for_ten_minutes_are_forgotten() -> None:
    clock = Clock()
    h = health(clock)
    fail(h, route(dep("a"), dep("b"), model_id="old", name="old"), 6)
    assert {s.model for s in h.snapshot()} == {"old"}
    h.pop_changes()
    clock.advance(599.0)
    pick(h, route(dep("a"), dep("b"), model_id="new", name="new"))
    assert {s.model for s in h.snapshot()} == {"old", "new"}
    clock.advance(2.0)
    pick(h, route(dep("a"), dep("b"), model_id="new", name="new"))
    assert {s.model for s in h.snapshot()} == {"new"} and h.tracked == 2
    assert h.pop_changes() == {("old", "a"): 0, ("old", "b"): 0}  # their gauges go back to closed


def test_tracked_deployments_are_capped_whatever_the_models() -> None:
    h = health(Clock(), max_tracked=100)
    for i in range(10_000):
        pick(h, route(dep("a"), dep("b"), dep("c"), model_id=f"m{i}", name=f"model-{i}"))
        assert h.tracked <= 100
    assert len(h.snapshot()) == 99 and h.snapshot()[-1].model == "model-9999"
    assert len(h._models) == 33


def test_snapshot_reports_state_cooldown_and_failures() -> None:
    clock = Clock()
    h = health(clock)
    r = route(dep("a", priority=0), dep("b", priority=1), dep("c", priority=2))
    fail(h, r, 3)
    fail(h, r, status=429, retry_after=4.0)
    fail(h, r, status=502)
    snap = {s.deployment: s for s in h.snapshot()}
    assert tuple(snap["a"]) == ("gpt", "a", "open", clock.now + 30.0, 3)
    assert tuple(snap["b"]) == ("gpt", "b", "closed", clock.now + 4.0, 0)
    assert tuple(snap["c"]) == ("gpt", "c", "closed", None, 1)
    clock.advance(30.0)
    snap = {s.deployment: s for s in h.snapshot()}
    assert (snap["a"].state, snap["a"].cooling_until, snap["b"].cooling_until) == ("half_open", None, None)
