"""Fixtures: ``run`` runs a test's scenario once on asyncio's loop and once on uvloop (the data plane's).

The client is tested against real loopback servers (``tests/data_plane/upstream/server.py``), never mocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
import uvloop

from tests.support.fake_dns import fake_dns

__all__ = ["fake_dns"]

T = TypeVar("T")
Run = Callable[[Coroutine[Any, Any, T]], T]
SCENARIO_TIMEOUT_S = 30.0


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run[Any]:
    """Run a coroutine to completion on a fresh loop of the parametrised kind (bounded in time)."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def runner(coro: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as loop_runner:
            return loop_runner.run(asyncio.wait_for(coro, SCENARIO_TIMEOUT_S))

    return runner
