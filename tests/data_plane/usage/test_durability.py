"""A completed request's record is on disk within the commit bound, whatever happens next (a
SIGKILL of the node while the control plane is away), and the usage stream is back within about
a second of the control plane answering again. Default batching and spilling (1 s, 2 s): the
records must not depend on them to survive."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.data_plane.usage.stack import (
    Stack,
    assert_exactly,
    cached_then_down,
    provision_priced,
    stop_cp,
    traffic,
    usage_status,
    wait_usage,
)
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.provision import Provisioned

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.usefixtures("fresh_fake"),
]

# The shipper's own schedule at its defaults: only the write-ahead log can save these records.
DEFAULTS = {"ODOCK_USAGE_BATCH_AGE_SECONDS": "1", "ODOCK_USAGE_SPILL_SECONDS": "2"}
# The documented bound (docs/usage.md, "Durability"): commit interval (50 ms) + one fdatasync,
# with room for a loaded CI machine.
DURABLE_AFTER = 0.15


async def test_sigkill_after_the_commit_bound_loses_no_record(stack: Stack, fake: FakeProvider) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp(**DEFAULTS)
    ids = await cached_then_down(stack, dp, org)
    ids += await traffic(dp, org, 48)
    await asyncio.sleep(DURABLE_AFTER)
    dp.kill()
    stack.restart_cp()
    successor = stack.dp(**DEFAULTS)
    try:
        await assert_exactly(stack, org, ids)
        assert usage_status(successor)["accepted"] == 48
    finally:
        assert successor.stop() == 0


async def _outage_then_back(stack: Stack, dp: DataPlaneProcess, org: Provisioned, down: float) -> float:
    """Stop the control plane for ``down`` seconds with traffic (the stream fails again and again),
    start it again; seconds from its being ready to the node's next acknowledged usage batch."""
    await traffic(dp, org, 1)  # the node (re)caches the key and route while the control plane is up
    await asyncio.to_thread(stop_cp, stack)
    deadline = time.monotonic() + down
    while time.monotonic() < deadline:
        await traffic(dp, org, 2)
        await asyncio.sleep(0.5)
    acked = usage_status(dp)["acked_batches"]
    await asyncio.to_thread(stack.restart_cp)
    back = time.monotonic()
    await wait_usage(dp, lambda s: s["acked_batches"] > acked, timeout=30)
    return time.monotonic() - back


async def test_usage_stream_is_back_within_about_a_second(stack: Stack, fake: FakeProvider) -> None:
    org = await provision_priced(stack.cp, fake)
    # The production reconnect cap (10 s): the stream's retries must stay short anyway.
    dp = stack.dp(ODOCK_RECONNECT_MAX_SECONDS="10", **DEFAULTS)
    try:
        # Two outages long enough for an exponential backoff to reach its cap.
        took = [await _outage_then_back(stack, dp, org, 6.0) for _ in range(2)]
        # The ack itself needs a sealed batch (records still in the journal wait up to the 1 s
        # batch age): about a second for the stream, plus that, plus CI margin.
        assert max(took) < 2.5, took
    finally:
        assert dp.stop() == 0
