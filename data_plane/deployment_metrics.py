"""Per-deployment metrics (docs/routing.md "Metrics"): attempts, their time, breaker states.

The request path calls :func:`record_attempt`, which only adds to plain counts in
this process (no Prometheus child lookups per attempt); :class:`DeploymentSeries`
moves them into the registry when the worker's metrics refresh (every second, and
before a single worker's scrape), together with the breaker changes ``Health``
collected. Label values are model and deployment names, so they are bounded:
the first ``MAX_SERIES`` (model, deployment) pairs of the process get their own
series, later ones are counted under ``OTHER``, and names are cut to ``MAX_NAME``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from data_plane.routing import Health

OUTCOMES = frozenset({"ok", "failed", "rate_limited", "timeout", "unreachable"})
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
MAX_SERIES = 1000
MAX_NAME = 128
OTHER = "_other"

Pair = tuple[str, str]
_labels: set[Pair] = set()  # the pairs that have series of their own
# (model, deployment, outcome) -> attempts since the last refresh
_counts: dict[tuple[str, str, str], int] = {}
_times: dict[Pair, list[float]] = {}  # per pair: observations per bucket (+Inf last), then their sum
_BOUNDS = (*ATTEMPT_BUCKETS, float("inf"))


def _pair(model: str, deployment: str) -> Pair | None:
    """The labels of a (model, deployment); None once ``MAX_SERIES`` others have theirs."""
    pair = (model[:MAX_NAME], deployment[:MAX_NAME])
    if pair in _labels:
        return pair
    if len(_labels) >= MAX_SERIES:
        return None
    _labels.add(pair)
    return pair


def record_attempt(model: str, deployment: str, outcome: str, seconds: float) -> None:
    """One upstream attempt: ``outcome`` one of ``OUTCOMES``, ``seconds`` until its head or failure."""
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown attempt outcome {outcome[:40]!r}")
    pair = _pair(model, deployment) or (OTHER, OTHER)
    key = (*pair, outcome)
    _counts[key] = _counts.get(key, 0) + 1
    if not math.isnan(seconds):
        times = _times.get(pair)
        if times is None:
            times = _times[pair] = [0.0] * (len(_BOUNDS) + 1)
        times[bisect_left(_BOUNDS, seconds)] += 1
        times[-1] += seconds


class DeploymentSeries:
    """The per-deployment metrics of one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "odock_dp_deployment_attempts",
            "Upstream attempts per deployment: outcome=ok|failed (5xx)|rate_limited (429)|timeout|unreachable.",
            ["model", "deployment", "outcome"], registry=registry,
        )  # fmt: skip
        self.seconds = Histogram(
            "odock_dp_deployment_attempt_seconds", "From sending an attempt upstream to its answer's head or failure.",
            ["model", "deployment"], buckets=ATTEMPT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.breaker = Gauge(
            "odock_dp_deployment_breaker_state",
            "A deployment's circuit breaker: 0 closed, 1 open, 2 half-open (with workers: the highest).",
            ["model", "deployment"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip

    def refresh(self, health: Health | None) -> None:
        """Move the attempts recorded since the last call, and ``health``'s breaker changes, into the series."""
        while _counts:
            (model, deployment, outcome), count = _counts.popitem()
            self.attempts.labels(model, deployment, outcome).inc(count)
        while _times:
            pair, times = _times.popitem()
            child = self.seconds.labels(*pair)
            buckets = child._buckets  # as metrics._Observer: the child's own values, multi-process safe
            for i, n in enumerate(times[:-1]):
                if n:
                    buckets[i].inc(n)
            child._sum.inc(times[-1])
        if health is not None:
            for (model, deployment), state in health.pop_changes().items():
                # No OTHER here: a state merged over unrelated deployments would mean nothing.
                labels = _pair(model, deployment)
                if labels is not None:
                    self.breaker.labels(*labels).set(state)
