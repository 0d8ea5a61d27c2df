"""Nothing lost, nothing counted twice: control-plane outages, SIGTERM and SIGKILL of the node,
replayed spool segments, and a full spool. Every test compares the record ids the clients saw
with what the control plane stored (per-id lookups and exact totals)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess
from tests.support.planes import ControlPlaneProcess
from tests.support.provision import Provisioned
from tests.usage.stack import (
    UsageQueries,
    free_port,
    provision_priced,
    start_cp,
    start_dp,
    usage_status,
    wait_usage,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MSGS = [{"role": "user", "content": "meter me"}]


class Stack:
    """A restartable control plane (fixed address, same database and secrets) and a spool directory."""

    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "cp.db"
        self.listen = f"127.0.0.1:{free_port()}"
        self.spool = tmp / "spool"
        self.cp: ControlPlaneProcess = start_cp(self.db, self.listen)
        self.secrets = self.cp.secrets

    def restart_cp(self) -> None:
        self.cp = start_cp(self.db, self.listen, self.secrets)

    def dp(self, **env: str) -> DataPlaneProcess:
        return start_dp(self.cp, self.spool, **env)


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeProvider) -> None:
    fake.reset()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.cp.stop()


async def _traffic(dp: DataPlaneProcess, org: Provisioned, count: int, *, stream: bool = False) -> list[str]:
    """``count`` chat requests, 4 at a time; the record ids of the answers (all must be 200)."""
    body = json.dumps({"model": "claude", "messages": MSGS, "max_tokens": 9, "stream": stream})
    ids: list[str] = []
    sem = asyncio.Semaphore(4)
    async with httpx.AsyncClient(base_url=dp.url, timeout=15) as client:

        async def one() -> None:
            async with sem:
                resp = await client.post(
                    "/v1/messages", content=body, headers={"Authorization": f"Bearer {org.key}"}
                )
            assert resp.status_code == 200, resp.text[:300]
            ids.append(resp.headers["x-odock-request-id"])

        await asyncio.gather(*(one() for _ in range(count)))
    return ids


async def _assert_exactly(stack: Stack, org: Provisioned, ids: list[str]) -> None:
    """The control plane holds one record per id and nothing else for the org."""
    queries = UsageQueries(stack.cp)
    try:
        totals = await queries.wait_requests(org.org.id, len(ids))
        assert len(set(ids)) == len(ids)
        for rid in ids:
            assert await queries.find(rid) is not None, rid
        assert totals.outcomes.complete == len(ids)
        await asyncio.sleep(0.5)  # late duplicates would show up now
        assert (await queries.totals(org.org.id)).requests == len(ids)
    finally:
        await queries.close()


def _stop_cp(stack: Stack) -> None:
    assert stack.cp.stop() == 0


async def test_control_plane_outage_spools_then_replays_exactly(stack: Stack, fake: FakeProvider) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    try:
        ids = await _traffic(dp, org, 20)
        during = asyncio.create_task(_traffic(dp, org, 30, stream=True))
        await asyncio.to_thread(_stop_cp, stack)
        ids += await during
        ids += await _traffic(dp, org, 20)  # entirely while the control plane is down
        status = await wait_usage(
            dp, lambda s: s["spooled_records"] > 0 and s["queued_records"] == 0 and s["inflight_batches"] == 0
        )
        assert status["dropped_records"] == 0
        stack.restart_cp()
        await _assert_exactly(stack, org, ids)
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
    ids = await _traffic(dp, org, 10)
    if not cp_up:
        await asyncio.to_thread(_stop_cp, stack)
    fake.knobs.chunk_delay = 0.1  # streams still running when SIGTERM arrives
    during = asyncio.create_task(_traffic(dp, org, 4, stream=True))
    await fake.wait_for_requests(14)
    assert await asyncio.to_thread(dp.stop, signal.SIGTERM) == 0
    ids += await during
    fake.knobs.chunk_delay = 0
    log = dp.stderr_text()
    assert "Traceback" not in log, log[-3000:]
    if cp_up:
        assert list(stack.spool.glob("*.seg")) == []  # all delivered before exiting
        await _assert_exactly(stack, org, ids)
        return
    assert list(stack.spool.glob("*.seg"))
    stack.restart_cp()
    successor = stack.dp()  # adopts the spool it finds
    try:
        await _assert_exactly(stack, org, ids)
    finally:
        successor.stop()


async def _cached_then_down(stack: Stack, dp: DataPlaneProcess, org: Provisioned) -> list[str]:
    """One request with the control plane up (the node caches grant and route), then stop it."""
    ids = await _traffic(dp, org, 1)
    await wait_usage(dp, lambda s: s["acked_batches"] >= 1)
    await asyncio.to_thread(_stop_cp, stack)
    return ids


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
    ids = await _cached_then_down(stack, dp, org)
    ids += await _traffic(dp, org, 25)
    await _all_spooled(dp, 25)
    dp.kill()
    stack.restart_cp()
    successor = stack.dp()
    try:
        await _assert_exactly(stack, org, ids)
        assert usage_status(successor)["accepted"] == 25
    finally:
        successor.stop()


async def test_replayed_acked_segments_count_once(stack: Stack, fake: FakeProvider, tmp_path: Path) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp()
    ids = await _cached_then_down(stack, dp, org)
    ids += await _traffic(dp, org, 20)
    await _all_spooled(dp, 20)
    backup = tmp_path / "acked-but-kept"
    shutil.copytree(stack.spool, backup)
    stack.restart_cp()
    await _assert_exactly(stack, org, ids)
    await wait_usage(dp, lambda s: s["spooled_batches"] == 0)
    assert dp.stop() == 0
    # As if the node had died after the acks but before deleting its segments.
    for seg in backup.glob("*.seg"):
        shutil.copy(seg, stack.spool / seg.name)
    successor = stack.dp()
    try:
        status = await wait_usage(successor, lambda s: s["spooled_batches"] == 0 and s["duplicates"] >= 20)
        assert (status["duplicates"], status["accepted"]) == (20, 0)
        await _assert_exactly(stack, org, ids)
    finally:
        successor.stop()


@pytest.mark.parametrize("policy", ["drop_newest", "drop_oldest"])
async def test_spool_full_policy_is_applied_and_counted(
    stack: Stack, fake: FakeProvider, policy: str
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = stack.dp(ODOCK_USAGE_SPOOL_MAX_BYTES="4096", ODOCK_USAGE_SPOOL_FULL_POLICY=policy)
    try:
        await _cached_then_down(stack, dp, org)
        ids: list[str] = []
        for _ in range(6):  # in rounds, so batches are spooled one after another
            ids += await _traffic(dp, org, 10)
            await _all_spooled(dp, len(ids))
        status = usage_status(dp)
        assert status["spool_full_policy"] == policy
        assert status["dropped_records"] > 0
        assert status["spooled_records"] + status["dropped_records"] == len(ids) == 60
        assert status["spool_bytes"] <= 4096
        stack.restart_cp()
        queries = UsageQueries(stack.cp)
        try:
            await queries.wait_requests(org.org.id, 1 + status["spooled_records"])
            stored = [rid for rid in ids if await queries.find(rid) is not None]
        finally:
            await queries.close()
        assert len(stored) == status["spooled_records"]
        # drop_newest keeps the first records that fit; drop_oldest keeps the latest ones.
        assert (ids[0] in stored, ids[-1] in stored) == (
            (True, False) if policy == "drop_newest" else (False, True)
        )
        assert "usage spool full" in dp.stderr_text()
    finally:
        dp.stop()


async def test_workers_share_one_spool_and_a_successor_adopts_it_all(
    stack: Stack, fake: FakeProvider
) -> None:
    org = await provision_priced(stack.cp, fake)
    dp = start_dp(stack.cp, stack.spool, ODOCK_WORKERS="2", ODOCK_DP_LISTEN=f"127.0.0.1:{free_port()}")
    ids = await _traffic(dp, org, 12)  # both workers cache the grant (connections are spread by the kernel)
    await asyncio.to_thread(_stop_cp, stack)
    ids += await _traffic(dp, org, 20)
    assert await asyncio.to_thread(dp.stop, signal.SIGTERM) == 0  # each worker spools what it holds
    assert "Traceback" not in dp.stderr_text()
    stack.restart_cp()
    successor = stack.dp()
    try:
        await _assert_exactly(stack, org, ids)
        assert list(stack.spool.glob("*.seg")) == []
    finally:
        successor.stop()
