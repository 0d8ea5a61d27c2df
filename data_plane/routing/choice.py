"""Smooth weighted round robin (nginx's): a 90/10 split interleaves and holds over any run of requests.

Each candidate's running weight grows by its weight; the largest is chosen and
loses the total. The running weights live in the deployments' health, so the
split holds across requests, per (model, priority): only deployments of one
priority are ever candidates together.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_plane.governance.domain import Deployment
from data_plane.routing.breaker import DeploymentHealth


def choose(candidates: Sequence[tuple[Deployment, DeploymentHealth]]) -> tuple[Deployment, DeploymentHealth]:
    """The next of ``candidates`` (not empty); a weight of 0 is chosen only when every candidate has 0."""
    total = 0
    best = candidates[0]
    best_current = 0
    for pair in candidates:
        weight = pair[0].weight
        if weight > 0:
            health = pair[1]
            current = health.current = health.current + weight
            if total == 0 or current > best_current:
                best, best_current = pair, current
            total += weight
    best[1].current -= total
    return best
