"""Fixtures: the benchmark's fake upstream and floor proxy as real processes, shared per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.benchmark.stack import Service, start_floor, start_upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Service]:
    """The fast fake provider (unpinned)."""
    svc = start_upstream(None)
    try:
        yield svc
    finally:
        assert svc.stop() == 0, svc.log_tail()


@pytest.fixture(scope="module")
def floor(upstream: Service) -> Iterator[Service]:
    """The bare pass-through proxy in front of ``upstream``."""
    svc = start_floor(upstream, None)
    try:
        yield svc
    finally:
        assert svc.stop() == 0, svc.log_tail()
