"""Weighted choice within a priority, priorities in order, one plan never trying a deployment twice."""

from __future__ import annotations

from collections import Counter

from tests.data_plane.routing.support import Clock, dep, fail, health, pick, route


def test_a_90_10_split_holds_over_1000_requests_and_interleaves() -> None:
    h = health(Clock())
    r = route(dep("a", weight=90), dep("b", weight=10))
    names = [pick(h, r) for _ in range(1000)]
    counts = Counter(names)
    assert abs(counts["a"] - 900) <= 30 and abs(counts["b"] - 100) <= 30
    # Smooth: every run of 10 consecutive requests holds exactly one "b" (no bursts).
    assert all(names[i : i + 10].count("b") == 1 for i in range(0, 1000, 10))


def test_three_deployments_5_3_2() -> None:
    h = health(Clock())
    r = route(dep("a", weight=5), dep("b", weight=3), dep("c", weight=2))
    counts = Counter(pick(h, r) for _ in range(1000))
    assert abs(counts["a"] - 500) <= 30 and abs(counts["b"] - 300) <= 30 and abs(counts["c"] - 200) <= 30


def test_the_split_is_kept_per_model_across_route_objects() -> None:
    # The route cache may hand out a new Route object for the same model: the running weights stay.
    h = health(Clock())
    counts: Counter[str] = Counter()
    for _ in range(100):
        counts[pick(h, route(dep("a", weight=3), dep("b", weight=1)))] += 1
    assert counts == {"a": 75, "b": 25}


def test_weight_zero_is_chosen_only_when_nothing_else_is_left() -> None:
    h = health(Clock())
    r = route(dep("a", weight=1), dep("spare", weight=0))
    assert {pick(h, r) for _ in range(50)} == {"a"}
    plan = h.plan(r)
    assert [plan.next(), plan.next(), plan.next()] == [r.deployments[0], r.deployments[1], None]


def test_lower_priority_first_and_the_next_only_when_all_lower_were_tried() -> None:
    h = health(Clock())
    r = route(dep("backup", priority=1), dep("a", priority=0), dep("b", priority=0), dep("last", priority=5))
    assert {pick(h, r) for _ in range(20)} == {"a", "b"}
    plan = h.plan(r)
    names = [d.name for d in iter(plan.next, None)]
    assert sorted(names[:2]) == ["a", "b"] and names[2:] == ["backup", "last"]
    assert plan.attempts == 4 and plan.next() is None and plan.attempts == 4


def test_the_next_priority_serves_while_every_lower_one_is_unavailable() -> None:
    clock = Clock()
    h = health(clock, cooldown_429=10.0)
    r = route(dep("a", priority=0), dep("b", priority=0), dep("backup", priority=1))
    fail(h, r, 2, status=429)  # both priority-0 deployments rate limited
    assert {pick(h, r) for _ in range(5)} == {"backup"}
    clock.advance(10.0)
    assert {pick(h, r) for _ in range(4)} == {"a", "b"}


def test_a_plan_never_hands_out_a_deployment_twice() -> None:
    h = health(Clock())
    r = route(dep("a", weight=100), dep("b", weight=1))
    plan = h.plan(r)
    first, second = plan.next(), plan.next()
    assert first is not None and second is not None and {first.name, second.name} == {"a", "b"}
    assert plan.next() is None and plan.cooling_until() is None
