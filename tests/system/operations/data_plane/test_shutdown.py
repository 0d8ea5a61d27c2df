"""SIGTERM during 20 open slow streams: all complete, all metered, exit 0 within the grace period;
and a worker that dies takes its live gauges with it while its counts stay in the totals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from data_plane.metrics import REFRESH_SECONDS
from tests.data_plane.helpers import chat_call
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned
from tests.system.operations.control_plane.ops import Scrape, scrape, wait_for
from tests.system.operations.data_plane.script import call, fresh_connections
from tests.system.operations.data_plane.stack import OpsControlPlane, OpsDataPlane, start_ops_dp

pytestmark = pytest.mark.asyncio(loop_scope="module")

STREAMS = 20
GRACE = 8.0
CHUNK_DELAY = 0.25  # 5 pieces: each stream runs ~1.5 s after SIGTERM


async def test_sigterm_lets_20_slow_streams_finish_and_meters_them_all(
    ops_cp: OpsControlPlane, org: Provisioned, fake: FakeProvider, queries: UsageQueries, tmp_path: Path
) -> None:
    dp = await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "spool",
                                 ODOCK_GRACE_SECONDS=str(GRACE))  # fmt: skip
    fake.knobs.chunks = 5
    fake.knobs.chunk_delay = CHUNK_DELAY
    started = asyncio.Event()
    first_bytes = 0

    async def one(client: httpx.AsyncClient, family: str, model: str) -> tuple[int, bytes, str]:
        nonlocal first_bytes
        req = chat_call(family, model, stream=True, key=org.key)
        async with client.stream("POST", req.path, content=req.body, headers=req.headers) as resp:
            chunks = resp.aiter_bytes()
            body = await anext(chunks)
            first_bytes += 1
            if first_bytes == STREAMS:
                started.set()
            body += b"".join([c async for c in chunks])
            return resp.status_code, body, resp.headers["x-odock-request-id"]

    families = [
        ("openai", "gpt-chat"),
        ("anthropic", "claude"),
        ("gemini", "gemini-flash"),
        ("vllm", "llama"),
    ]
    async with httpx.AsyncClient(
        base_url=dp.url, timeout=30, limits=httpx.Limits(max_connections=STREAMS)
    ) as client:
        tasks = [asyncio.create_task(one(client, *families[i % 4])) for i in range(STREAMS)]
        await asyncio.wait_for(started.wait(), 20)
        sent_at = time.monotonic()
        dp.process.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*tasks)
        code = await asyncio.to_thread(dp.process.process.wait, GRACE + 10)
        took = time.monotonic() - sent_at
    assert code == 0, dp.process.stderr_text()[-3000:]
    assert took < GRACE, f"exit after {took:.1f}s"
    ends = {"openai": b"[DONE]", "anthropic": b"message_stop", "gemini": b"finishReason", "vllm": b"[DONE]"}
    for i, (status, body, _rid) in enumerate(results):
        family = families[i % 4][0]
        assert status == 200 and ends[family] in body, (family, body[-200:])
        assert body.count(b"piece") >= 5, body[-300:]
    for _status, _body, rid in results:
        record = await queries.record(rid)
        assert record.outcome == 1 and record.output_tokens == 5, record  # complete, every piece counted
    log = [json.loads(line) for line in dp.process.stderr_text().splitlines()]
    assert sum(1 for r in log if r["logger"] == "odock.data_plane.request") == STREAMS
    assert any(r["message"].startswith("usage shipper closed") for r in log)


async def test_a_dead_workers_gauges_go_and_its_counts_stay(
    ops_cp: OpsControlPlane, org: Provisioned, tmp_path: Path
) -> None:
    dp = await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "spool", workers=2)
    assert dp.metrics is not None
    metrics = dp.metrics
    try:
        calls = 0
        async with fresh_connections(dp.url) as client:
            for _ in range(60):
                seen = await call(client, "openai", chat_call("openai", "gpt-chat", key=org.key))
                assert seen.status == 200, seen.body[:300]
                calls += 1
                if len({r["node_id"] for r in dp.request_lines()}) == 2:
                    break
        # A request's line is written on the worker's next loop iteration, after its answer: the
        # count to expect is the calls made, not the lines read so far.
        total = float(calls)
        deadline = time.monotonic() + 10
        while len(lines := dp.request_lines()) < calls and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(lines) == calls
        assert len({r["node_id"] for r in lines}) == 2

        def requests(s: Scrape) -> float:
            return s.get("odock_dp_requests_total", family="openai", endpoint="/v1/chat/completions",
                         code="200", outcome="complete") or 0.0  # fmt: skip

        await asyncio.to_thread(wait_for, metrics, lambda s: requests(s) == total, "requests counted")
        worker_pids = [line.split()[3] for line in _serving(dp)]
        assert len(worker_pids) == 2
        os.kill(int(worker_pids[0]), signal.SIGKILL)
        # The supervisor reaps it and starts another: two live workers again, nothing counted twice or lost.
        got = await asyncio.to_thread(
            wait_for, metrics,
            lambda s: s.get("odock_dp_workers") == 2 and len(_serving(dp)) == 3,
            "a replacement worker",
        )  # fmt: skip
        assert requests(got) == total
        await asyncio.sleep(REFRESH_SECONDS * 2)  # the replacement has published its own gauges by now
        again = await asyncio.to_thread(scrape, metrics)
        assert again.value("odock_dp_workers") == 2, "the dead worker's gauge is still counted"
        assert requests(again) == total
    finally:
        assert await asyncio.to_thread(dp.process.stop) == 0


def _serving(dp: OpsDataPlane) -> list[str]:
    """Worker start lines so far."""
    records = dp.log_records()
    return [
        r["message"]
        for r in records
        if r["message"].startswith("data plane worker") and "serving" in r["message"]
    ]
