"""The limit metrics both planes count, and how they group (the two must agree on every set)."""

from __future__ import annotations

from odock.v1 import node_pb2

REQUESTS_PER_MINUTE = node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE
TOKENS_PER_MINUTE = node_pb2.LIMIT_METRIC_TOKENS_PER_MINUTE
MONTHLY_TOKENS = node_pb2.LIMIT_METRIC_MONTHLY_TOKENS
MONTHLY_SPEND = node_pb2.LIMIT_METRIC_MONTHLY_SPEND
BUDGET = node_pb2.LIMIT_METRIC_BUDGET

PER_MINUTE = frozenset({REQUESTS_PER_MINUTE, TOKENS_PER_MINUTE})
MONTHLY = frozenset({MONTHLY_TOKENS, MONTHLY_SPEND})
# Metrics whose leases are returned (and so have lease rows): the long windows.
RETURNABLE = frozenset({MONTHLY_TOKENS, MONTHLY_SPEND, BUDGET})
MONEY = frozenset({MONTHLY_SPEND, BUDGET})
