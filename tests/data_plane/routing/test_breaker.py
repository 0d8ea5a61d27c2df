"""Circuit breakers: open after N failures or a failure rate, one half-open probe, doubling cooldowns."""

from __future__ import annotations

from data_plane.governance.domain import Route
from data_plane.routing import Health
from tests.data_plane.routing.support import Clock, dep, fail, health, pick, route


def primary_and_backup() -> Route:
    return route(dep("a", priority=0), dep("b", priority=1))


def state_of(h: Health, name: str) -> str:
    return next(s.state for s in h.snapshot() if s.deployment == name)


def test_opens_after_three_consecutive_failures_then_traffic_goes_elsewhere() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    assert fail(h, r, 2) == ["a", "a"]
    assert pick(h, r) == "a"  # a success resets the count
    assert fail(h, r, 3) == ["a", "a", "a"]
    assert state_of(h, "a") == "open"
    assert {pick(h, r) for _ in range(50)} == {"b"}  # no attempt at all on the dead one
    assert h.pop_changes() == {("gpt", "a"): 1}


def test_breakers_off_with_zero_failures() -> None:
    h = health(Clock(), breaker_failures=0)
    r = primary_and_backup()
    assert set(fail(h, r, 100)) == {"a"}
    assert state_of(h, "a") == "closed"


def test_half_open_lets_one_probe_through_and_finish_frees_an_abandoned_one() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    fail(h, r, 3)
    clock.advance(30.0)
    probe, other = h.plan(r), h.plan(r)
    a = probe.next()
    assert a is not None and a.name == "a" and state_of(h, "a") == "half_open"
    b = other.next()
    assert b is not None and b.name == "b"  # the probe slot is taken
    other.succeeded(b, 0.1)
    other.finish()
    probe.finish()  # ended without a report (client gone, cancelled): the slot is free again
    again = h.plan(r)
    assert again.next() == a
    assert h.plan(r).next() == r.deployments[1]


def test_a_successful_probe_closes_the_breaker() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    fail(h, r, 3)
    clock.advance(30.0)
    assert pick(h, r) == "a"
    assert state_of(h, "a") == "closed"
    assert {pick(h, r) for _ in range(10)} == {"a"}
    assert h.pop_changes() == {("gpt", "a"): 0}  # open, half-open, closed: the last one is kept


def test_each_failed_probe_doubles_the_cooldown_up_to_8x_and_success_resets_it() -> None:
    clock = Clock()
    h = health(clock, breaker_cooldown=10.0)
    r = primary_and_backup()
    fail(h, r, 3)
    for cooldown in (10.0, 20.0, 40.0, 80.0, 80.0):
        clock.advance(cooldown - 0.01)
        assert pick(h, r) == "b", cooldown
        clock.advance(0.01)
        assert fail(h, r) == ["a"]  # the probe fails: open again, for twice as long
    clock.advance(80.0)
    assert pick(h, r) == "a"  # the probe succeeds: closed, and the next opening is 1x again
    fail(h, r, 3)
    clock.advance(10.0)
    assert pick(h, r) == "a"


def test_a_failure_reported_late_by_a_non_probe_does_not_reopen() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    early = h.plan(r)
    slow = early.next()
    assert slow is not None
    fail(h, r, 3)
    clock.advance(30.0)
    probe = h.plan(r)
    assert probe.next() == slow
    early.failed(slow)  # an attempt from before the breaker opened comes back failed
    assert state_of(h, "a") == "half_open"
    probe.succeeded(slow, 0.2)
    assert state_of(h, "a") == "closed"


def test_the_failure_rate_over_the_window_opens_it() -> None:
    clock = Clock()
    h = health(
        clock, breaker_failures=100, breaker_min_requests=10, breaker_failure_rate=0.5, breaker_window=30.0
    )
    r = primary_and_backup()
    for _ in range(4):
        fail(h, r)
        pick(h, r)
    fail(h, r)
    assert state_of(h, "a") == "closed"  # 5 failures in 9 attempts: too few attempts to judge
    pick(h, r)
    fail(h, r)
    assert state_of(h, "a") == "open"  # 6 of 11


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    h = health(
        clock, breaker_failures=100, breaker_min_requests=10, breaker_failure_rate=0.5, breaker_window=30.0
    )
    r = primary_and_backup()
    fail(h, r, 9)
    clock.advance(31.0)
    for _ in range(9):
        pick(h, r)
    fail(h, r)
    assert state_of(h, "a") == "closed"  # 1 failure in the last 10 attempts


def test_a_429_cools_down_but_never_opens_the_breaker() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    for _ in range(10):
        assert fail(h, r, status=429) == ["a"]  # default cooldown_429: 1 s
        assert pick(h, r) == "b"
        clock.advance(1.0)
    assert state_of(h, "a") == "closed"
    assert pick(h, r) == "a"


def test_retry_after_keeps_a_deployment_out_until_it_expires() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    fail(h, r, status=429, retry_after=5.0)
    clock.advance(4.9)
    assert pick(h, r) == "b"
    clock.advance(0.1)
    assert pick(h, r) == "a"
    fail(h, r, status=503, retry_after=2.0)  # a 503's Retry-After cools it too, and counts as a failure
    assert next(s for s in h.snapshot() if s.deployment == "a").failures == 1
    assert pick(h, r) == "b"
    clock.advance(2.0)
    assert pick(h, r) == "a"


def test_cooling_until_names_when_the_first_comes_back() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    plan = h.plan(r)
    a, b = plan.next(), plan.next()
    assert a is not None and b is not None
    plan.failed(a, 7.0, status=429)
    plan.failed(b, 3.0, status=429)
    # Both were tried: nothing is cooling *untried*.
    assert plan.next() is None and plan.cooling_until() is None
    fresh = h.plan(r)
    assert fresh.next() is None and fresh.cooling_until() == clock.now + 3.0
    fail(h, route(dep("x"), dep("y"), model_id="m2"), 6)  # open both breakers of another model
    plan = h.plan(route(dep("x"), dep("y"), model_id="m2"))
    assert plan.next() is None and plan.cooling_until() == clock.now + 30.0


def test_a_probe_answered_429_frees_the_slot_and_stays_half_open() -> None:
    clock = Clock()
    h = health(clock)
    r = primary_and_backup()
    fail(h, r, 3)
    clock.advance(30.0)
    assert fail(h, r, status=429, retry_after=2.0) == ["a"]  # rate limited, not broken
    assert state_of(h, "a") == "half_open"
    assert pick(h, r) == "b"
    clock.advance(2.0)
    assert pick(h, r) == "a" and state_of(h, "a") == "closed"


def test_the_split_holds_among_the_available_ones_of_a_priority() -> None:
    clock = Clock()
    h = health(clock)
    r = route(dep("a", weight=3), dep("b", weight=1), dep("c", weight=1))
    plan = h.plan(r)
    for d in iter(plan.next, None):
        if d.name == "c":
            plan.failed(d, 100.0, status=429)  # c out for a while
        else:
            plan.succeeded(d, 0.1)
    plan.finish()
    names = [pick(h, r) for _ in range(400)]
    assert names.count("c") == 0 and abs(names.count("a") - 300) <= 12 and abs(names.count("b") - 100) <= 12
