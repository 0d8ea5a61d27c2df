"""The attempts and the chosen deployment in the request log, and per-deployment metrics."""

from __future__ import annotations

import asyncio
import time

from tests.data_plane.usage.stack import metric
from tests.support.dataplane import DataPlaneProcess
from tests.system.e2e.routing.conftest import MakeUpstream
from tests.system.e2e.routing.stack import Dep, Reply, World, chat, sdk

MODEL = "observed-model"  # metrics are labelled by model name: one no other test uses


def _log_line(dp: DataPlaneProcess, reply: Reply) -> str:
    lines = [line for line in dp.stderr_text().splitlines() if f"request_id={reply.request_id}" in line]
    assert len(lines) == 1, lines
    return lines[0]


async def test_log_line_and_metrics_name_deployments(gateway: str, dp_fast: DataPlaneProcess, world: World,
                                                     upstream: MakeUpstream) -> None:
    broken, working = await upstream("broken"), await upstream("working")
    await world.model(MODEL, [Dep(broken), Dep(working)])
    await broken.switch("error", status=500)
    async with sdk(gateway, world.key) as client:
        replies = [await chat(client, MODEL) for _ in range(8)]
    assert {r.status for r in replies} == {200}
    await asyncio.sleep(0.2)  # the log line is written as the answer ends
    for reply in replies:
        line = _log_line(dp_fast, reply)
        assert " deployment=working" in line and f" attempts={reply.attempts}" in line, line
    deadline = time.monotonic() + 5  # metrics move into the registry every second

    def sample(name: str, **labels: str) -> float:
        return metric(dp_fast, name, model=MODEL, **labels)

    while time.monotonic() < deadline:
        if sample("odock_dp_deployment_attempts_total", deployment="working", outcome="ok") >= len(replies):
            break
        await asyncio.sleep(0.2)
    assert sample("odock_dp_deployment_attempts_total", deployment="working", outcome="ok") == working.count()
    assert sample("odock_dp_deployment_attempts_total", deployment="broken", outcome="failed") == broken.count()
    assert 3 <= broken.count() <= 4  # the breaker opened (a probe, if the 8 requests took over 1 s)
    assert sample("odock_dp_deployment_breaker_state", deployment="broken") in (1, 2)  # open or half-open
    assert sample("odock_dp_deployment_breaker_state", deployment="working") == 0
