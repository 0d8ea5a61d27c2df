"""Choosing among a model's deployments: weights, priorities, Retry-After, circuit breakers (docs/routing.md).

A pure library, no I/O: the request path asks ``Health.plan(route)`` for a plan per
client request and route tried, and reports each attempt's outcome to it.
"""

from data_plane.routing.health import DeploymentState, Health
from data_plane.routing.plan import Plan
from data_plane.routing.retry_after import RETRYABLE_STATUSES, retry_after_seconds

__all__ = ["RETRYABLE_STATUSES", "DeploymentState", "Health", "Plan", "retry_after_seconds"]
