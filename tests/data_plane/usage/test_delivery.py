"""Nothing lost, nothing counted twice: control-plane outages, SIGTERM and SIGKILL of the node,
replayed spool segments, and a full spool. Every test compares the record ids the clients saw
with what the control plane stored (per-id lookups and exact totals)."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.data_plane.usage.stack import (
    Stack,
    UsageQueries,
    assert_exactly,
    cached_then_down,
    free_port,
    provision_priced,
    start_dp,
    stop_cp,
    traffic,
    usage_status,
    wait_usage,
)
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess

pytestmark = [
    pytest.mark.slow,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.usefixtures("fresh_fake"),
]


async def test_control_plane_outage_spools_then_replays_exactly(stack: Stack, fake: FakeProvider) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    try:
        ids = await traffic(dp, org, 20)
        during = asyncio.create_task(traffic(dp, org, 30, stream=True))
        await asyncio.to_thread(stop_cp, stack)
        ids += await during
        ids += await traffic(dp, org, 20)  # entirely while the control plane is down
        status = await wait_usage(
            dp, lambda s: s["spooled_records"] > 0 and s["queued_records"] == 0 and s["inflight_batches"] == 0
        )
        assert status["dropped_records"] == 0
        stack.restart_cp()
        await assert_exactly(stack, org, ids)
        await wait_usage(dp, lambda s: s["spooled_batches"] == 0)
        assert list(stack.spool.glob("*.seg")) == []
    finally:
        assert dp.stop() == 0


@pytest.mark.parametrize("cp_up", [True, False])
async def test_sigterm_during_traffic_flushes_or_spools(
    stack: Stack, fake: FakeProvider, cp_up: bool
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    ids = await traffic(dp, org, 10)
    if not cp_up:
        await asyncio.to_thread(stop_cp, stack)
    fake.knobs.chunk_delay = 0.1  # streams still running when SIGTERM arrives
    during = asyncio.create_task(traffic(dp, org, 4, stream=True))
    await fake.wait_for_requests(14)
    assert await asyncio.to_thread(dp.stop, signal.SIGTERM) == 0
    ids += await during
    fake.knobs.chunk_delay = 0
    log = dp.stderr_text()
    assert "Traceback" not in log, log[-3000:]
    if cp_up:
        assert list(stack.spool.glob("*.seg")) == []  # all delivered before exiting
        await assert_exactly(stack, org, ids)
        return
    assert list(stack.spool.glob("*.seg"))
    stack.restart_cp()
    successor = stack.dp()  # adopts the spool it finds
    try:
        await assert_exactly(stack, org, ids)
    finally:
        successor.stop()


async def _all_spooled(dp: DataPlaneProcess, count: int) -> dict[str, object]:
    return await wait_usage(
        dp,
        lambda s: (
            s["queued_records"] == 0
            and s["inflight_batches"] == 0
            and s["spooled_records"] + s["dropped_records"] >= count
        ),
    )


async def test_sigkill_with_spooled_records_then_restart(stack: Stack, fake: FakeProvider) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    ids = await cached_then_down(stack, dp, org)
    ids += await traffic(dp, org, 25)
    await _all_spooled(dp, 25)
    dp.kill()
    stack.restart_cp()
    successor = stack.dp()
    try:
        await assert_exactly(stack, org, ids)
        assert usage_status(successor)["accepted"] == 25
    finally:
        successor.stop()


async def test_replayed_acked_segments_count_once(stack: Stack, fake: FakeProvider, tmp_path: Path) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    ids = await cached_then_down(stack, dp, org)
    ids += await traffic(dp, org, 20)
    await _all_spooled(dp, 20)
    backup = tmp_path / "acked-but-kept"
    shutil.copytree(stack.spool, backup)
    stack.restart_cp()
    await assert_exactly(stack, org, ids)
    await wait_usage(dp, lambda s: s["spooled_batches"] == 0)
    assert dp.stop() == 0
    # As if the node had died after the acks but before deleting its segments.
    for seg in backup.glob("*.seg"):
        shutil.copy(seg, stack.spool / seg.name)
    successor = stack.dp()
    try:
        status = await wait_usage(successor, lambda s: s["spooled_batches"] == 0 and s["duplicates"] >= 20)
        assert (status["duplicates"], status["accepted"]) == (20, 0)
        await assert_exactly(stack, org, ids)
    finally:
        successor.stop()


def _settled(count: int) -> Any:
    """Every record spooled (released from memory), still in memory (refused by a full spool), or
    dropped: nothing counted twice, nothing in flight."""
    return lambda s: (
        s["inflight_batches"] == 0
        and s["spooled_records"] + s["queued_records"] + s["dropped_records"] == count
        and s["queued_records"] <= MEMORY_MAX
    )


MEMORY_MAX = 5


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_spool_full_policy_is_applied_and_counted(
    stack: Stack, fake: FakeProvider, policy: str
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp(
        ODOCK_USAGE_SPOOL_MAX_BYTES="4096", ODOCK_USAGE_SPOOL_FULL_POLICY=policy,
        ODOCK_USAGE_MEMORY_MAX_RECORDS=str(MEMORY_MAX),
    )  # fmt: skip
    try:
        await cached_then_down(stack, dp, org)
        ids: list[str] = []
        for _ in range(6):  # in rounds, so batches are spooled one after another
            ids += await traffic(dp, org, 10)
            await wait_usage(dp, _settled(len(ids)))
        status = usage_status(dp)
        assert status["spool_full_policy"] == policy
        assert status["dropped_records"] == status["dropped"]["spool_full"] > 0, str(status)
        kept = status["spooled_records"] + status["queued_records"]  # drop_newest: memory holds 5 more
        assert kept + status["dropped_records"] == len(ids) == 60
        if policy == "drop_newest":
            assert status["queued_records"] == MEMORY_MAX
        else:  # a batch whose segment is deleted before it was spilled waits in memory (bounded)
            assert status["queued_records"] <= MEMORY_MAX
        assert status["spool_bytes"] <= 4096
        stack.restart_cp()
        queries = UsageQueries(stack.cp)
        try:
            await queries.wait_requests(org.org.id, 1 + kept)
            stored = [rid for rid in ids if await queries.find(rid) is not None]
        finally:
            await queries.close()
        assert len(stored) == kept
        # drop_newest keeps the first records that fit; drop_oldest keeps the latest ones.
        assert (ids[0] in stored, ids[-1] in stored) == (
            (True, False) if policy == "drop_newest" else (False, True)
        )
        log = dp.stderr_text()
        assert ("usage spool full" if policy == "drop_oldest" else "records dropped (spool_full)") in log
    finally:
        dp.stop()


async def test_workers_share_one_spool_and_a_successor_adopts_it_all(
    stack: Stack, fake: FakeProvider
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = start_dp(stack.cp, stack.spool, ODOCK_WORKERS="2", ODOCK_DP_LISTEN=f"127.0.0.1:{free_port()}")
    ids = await traffic(dp, org, 12)  # both workers cache the grant (connections are spread by the kernel)
    await asyncio.to_thread(stop_cp, stack)
    ids += await traffic(dp, org, 20)
    assert await asyncio.to_thread(dp.stop, signal.SIGTERM) == 0  # each worker spools what it holds
    assert "Traceback" not in dp.stderr_text()
    stack.restart_cp()
    successor = stack.dp()
    try:
        await assert_exactly(stack, org, ids)
        assert list(stack.spool.glob("*.seg")) == []
    finally:
        successor.stop()
