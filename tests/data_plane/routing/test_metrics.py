"""Per-deployment metrics: attempts by outcome, attempt time, breaker state, bounded labels."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from data_plane import deployment_metrics, metrics
from data_plane.metrics import DataPlaneMetrics
from tests.data_plane.routing.support import Clock, dep, fail, health, pick, route


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in (("_labels", set()), ("_counts", {}), ("_times", {})):
        monkeypatch.setattr(deployment_metrics, name, value)
    yield


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(m: DataPlaneMetrics) -> Samples:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        if family.name.startswith("odock_dp_deployment"):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(got: Samples, name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


def test_attempts_times_and_breaker_states_reach_the_registry() -> None:
    m = DataPlaneMetrics()
    metrics.record_attempt("gpt", "east", "ok", 0.2)
    metrics.record_attempt("gpt", "east", "ok", 0.3)
    metrics.record_attempt("gpt", "west", "rate_limited", 40.0)
    clock = Clock()
    h = health(clock)
    r = route(dep("east", priority=0), dep("west", priority=1))
    fail(h, r, 3)
    m.deployments.refresh(h)
    got = samples(m)
    east, west = {"model": "gpt", "deployment": "east"}, {"model": "gpt", "deployment": "west"}
    assert value(got, "odock_dp_deployment_attempts_total", **east, outcome="ok") == 2
    assert value(got, "odock_dp_deployment_attempts_total", **west, outcome="rate_limited") == 1
    assert value(got, "odock_dp_deployment_attempt_seconds_count", **east) == 2
    assert value(got, "odock_dp_deployment_attempt_seconds_sum", **east) == pytest.approx(0.5)
    assert value(got, "odock_dp_deployment_attempt_seconds_bucket", **east, le="0.25") == 1
    assert value(got, "odock_dp_deployment_attempt_seconds_bucket", **west, le="30.0") == 0
    assert value(got, "odock_dp_deployment_attempt_seconds_bucket", **west, le="+Inf") == 1
    assert value(got, "odock_dp_deployment_breaker_state", **east) == 1
    clock.advance(30.0)
    assert pick(h, r) == "east"
    metrics.record_attempt("gpt", "east", "ok", 0.1)
    m.deployments.refresh(h)
    got = samples(m)
    assert value(got, "odock_dp_deployment_breaker_state", **east) == 0
    # Moved once, not again.
    assert value(got, "odock_dp_deployment_attempts_total", **east, outcome="ok") == 3


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(ValueError, match="outcome"):
        metrics.record_attempt("gpt", "east", "exploded", 0.1)


def test_label_pairs_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deployment_metrics, "MAX_SERIES", 3)
    m = DataPlaneMetrics()
    for i in range(50):
        metrics.record_attempt(f"model-{i}" + "x" * 500, "d", "failed", 1.0)
    h = health(Clock())
    fail(h, route(dep("a"), dep("b"), model_id="late", name="late"), 6)
    m.deployments.refresh(h)
    got = samples(m)
    models = {dict(labels)["model"] for _, labels in got}
    assert len(models) == 4 and "_other" in models and max(len(x) for x in models) == 128
    other = {"model": "_other", "deployment": "_other", "outcome": "failed"}
    assert value(got, "odock_dp_deployment_attempts_total", **other) == 47
    # No series of its own left for the late model's breakers.
    assert not any(name == "odock_dp_deployment_breaker_state" for name, _ in got)
