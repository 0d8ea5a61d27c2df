"""Request metrics are tallied per request and reach the registry on flush (each scrape's
refresh) exactly as Histogram.observe / Counter.inc would have put them, including across the
bound on cached label sets."""

from __future__ import annotations

import math

import pytest
from prometheus_client import Counter, Histogram
from prometheus_client.parser import text_string_to_metric_families

from data_plane import metrics as metrics_module
from data_plane.metrics import DataPlaneMetrics
from data_plane.providers import ANTHROPIC, OPENAI


def samples(m: DataPlaneMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        if family.name.startswith(("odock_dp_request", "odock_dp_overhead", "odock_dp_upstream_first", "odock_dp_tokens")):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


CALLS = [
    (OPENAI, "/v1/chat/completions", 200, 1, 0.004, 0.0003, 0.003, 10, 5, 2),
    (OPENAI, "/v1/chat/completions", 200, 1, 0.3, 0.0002, 0.25, 7, 1, 0),
    (OPENAI, "/v1/chat/completions", 429, 4, 0.001, 0.001, None, 0, 0, 0),
    (ANTHROPIC, "/v1/messages", 200, 1, 61.0, 0.02, 2.0, 100, 200, 50),
    (ANTHROPIC, "/v1/messages", 502, 4, 500.0, math.nan, None, 0, 0, 0),
]


def reference() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The same calls straight through prometheus_client's own observe/inc on a twin registry."""
    twin = DataPlaneMetrics()
    for family, endpoint, status, outcome, total, overhead, first_byte, tin, tout, tcached in CALLS:
        fam = metrics_module.family_label(family)
        twin.requests.labels(fam, endpoint, str(status), metrics_module.OUTCOMES[outcome]).inc()
        twin.request_seconds.labels(fam, endpoint).observe(total)
        twin.overhead_seconds.labels(fam).observe(overhead)
        if first_byte is not None:
            twin.upstream_first_byte.labels(fam).observe(first_byte)
        for kind, n in (("input", tin), ("output", tout), ("cached_input", tcached)):
            if n:
                twin.tokens.labels(fam, kind).inc(n)
    return samples(twin)


def test_tallies_reach_the_registry_on_flush_as_observe_would_put_them() -> None:
    m = DataPlaneMetrics()
    for call in CALLS:
        m.request_done(*call)
    before = samples(m)
    # Not flushed yet: the label sets exist (made on first use), nothing is counted in them.
    assert all(v == 0 for (name, _), v in before.items() if name == "odock_dp_requests_total")
    m.flush_requests()
    got, want = samples(m), reference()
    assert set(got) == set(want)
    for k, v in want.items():
        assert (math.isnan(v) and math.isnan(got[k])) or got[k] == pytest.approx(v), k
    m.flush_requests()  # a second flush adds nothing
    again = samples(m)
    assert {k: v for k, v in again.items() if not math.isnan(v)} == {k: v for k, v in got.items() if not math.isnan(v)}


def test_nothing_tallied_is_lost_when_the_cached_label_sets_are_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "MAX_CACHED_CHILDREN", 3)
    m = DataPlaneMetrics()
    for status in range(200, 210):
        m.request_done(OPENAI, "/v1/chat/completions", status, 1, 0.01, 0.0001, 0.005)
    m.flush_requests()
    got = samples(m)
    total = sum(v for (name, _), v in got.items() if name == "odock_dp_requests_total")
    assert total == 10
    assert got[("odock_dp_request_seconds_count", frozenset({("family", "openai"), ("endpoint", "/v1/chat/completions")}))] == 10


def test_the_twin_really_uses_prometheus_types() -> None:
    m = DataPlaneMetrics()
    assert isinstance(m.requests, Counter) and isinstance(m.request_seconds, Histogram)
