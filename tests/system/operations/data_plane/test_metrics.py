"""``/metrics`` of a real data plane after scripted traffic: one worker, and two workers whose
values the supervisor merges (counters and histograms summed, gauges of live workers)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from odock.v1 import common_pb2, keys_pb2
from tests.data_plane.helpers import chat_call
from tests.data_plane.usage.stack import UsageQueries
from tests.fakes.provider import FakeProvider
from tests.support.provision import Provisioned, Provisioner, unique_name
from tests.system.operations.control_plane.ops import Scrape, wait_for
from tests.system.operations.data_plane.script import Seen, call, fresh_connections, metrics_script, tally
from tests.system.operations.data_plane.stack import OpsControlPlane, OpsDataPlane, start_ops_dp

pytestmark = pytest.mark.asyncio(loop_scope="module")

FAMILIES = ("openai", "anthropic", "gemini", "vllm")


async def _limited_key(cp: OpsControlPlane, org: Provisioned) -> str:
    """A new all-models key of ``org`` allowed one request per minute."""
    async with Provisioner.connect(cp.process.address, cp.process.admin_token) as admin:
        key = keys_pb2.VirtualKey(org_id=org.org.id, name=unique_name("rpm1"), all_models=True,
                                  limits=common_pb2.KeyLimits(requests_per_minute=1))  # fmt: skip
        resp = await admin.keys.CreateVirtualKey(
            keys_pb2.CreateVirtualKeyRequest(key=key), metadata=admin.metadata
        )
        return str(resp.secret)


async def _spread_over_workers(dp: OpsDataPlane, org: Provisioned, workers: int) -> list[Seen]:
    """More successes until every worker has logged a request (bounded): the sums span workers."""
    extra: list[Seen] = []
    async with fresh_connections(dp.url) as client:
        for _ in range(60):
            nodes = {r["node_id"] for r in dp.request_lines()}
            if len(nodes) >= workers:
                return extra
            extra.append(await call(client, "openai", chat_call("openai", "gpt-chat", key=org.key)))
            await asyncio.sleep(0.02)
    raise AssertionError(f"requests never reached all {workers} workers")


def _sum(s: Scrape, name: str, **labels: str) -> float:
    """Sum of ``name`` over every sample whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in s.samples.items() if n == name and want <= set(ls))


@pytest.mark.parametrize("workers", [1, 2])
async def test_metrics_after_a_scripted_run(
    workers: int, ops_cp: OpsControlPlane, org: Provisioned, fake: FakeProvider,
    queries: UsageQueries, tmp_path: Path,
) -> None:  # fmt: skip
    dp = await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "spool", workers=workers)
    try:
        limited = await _limited_key(ops_cp, org)
        async with fresh_connections(dp.url) as client:
            seen = await metrics_script(client, org, limited, fake)
        if workers > 1:
            seen += await _spread_over_workers(dp, org, workers)
        statuses = Counter(s.status for s in seen)
        assert {200, 401, 404, 429, 500} <= set(statuses), statuses
        expected = tally(seen)
        metered = [s for s in seen if s.record_id is not None]
        assert len(metered) == len(seen) - 1  # all but the unknown key

        def settled(got: Scrape) -> bool:
            return (
                _sum(got, "odock_dp_requests_total") == len(seen)
                and _sum(got, "odock_dp_usage_records_total", result="accepted") == len(metered)
                and _sum(got, "odock_dp_governance_cache_lookups_total", table="key") == len(seen)
            )

        assert dp.metrics is not None
        got = await asyncio.to_thread(wait_for, dp.metrics, settled, "all requests counted")

        for (family, endpoint, code, outcome), count in expected.items():
            labels = {"family": family, "endpoint": endpoint, "code": code, "outcome": outcome}
            assert got.value("odock_dp_requests_total", **labels) == count, labels
        for family in FAMILIES:
            answered = sum(1 for s in seen if s.family == family)
            assert _sum(got, "odock_dp_request_seconds_count", family=family) == answered, family
            assert got.get("odock_dp_overhead_seconds_count", family=family) in (
                (None,) if answered == 0 else (float(answered),)
            ), family
            # Upstream answered every metered request that passed the model and limit checks.
            upstream = sum(1 for s in seen if s.family == family and s.status in (200, 500))
            assert (got.get("odock_dp_upstream_first_byte_seconds_count", family=family) or 0) == upstream
        # Histogram buckets are cumulative and end at the count.
        inf = got.value("odock_dp_overhead_seconds_bucket", family="openai", le="+Inf")
        assert inf == got.value("odock_dp_overhead_seconds_count", family="openai")
        assert got.value("odock_dp_overhead_seconds_bucket", family="openai", le="1.0") <= inf

        # Tokens: what the meters recorded, as the control plane stored them.
        records = [await queries.record(s.record_id) for s in metered if s.record_id]
        for family, enum in (("openai", 1), ("anthropic", 2), ("gemini", 3)):
            ins = sum(r.input_tokens for r in records if r.family == enum)
            outs = sum(r.output_tokens for r in records if r.family == enum)
            assert ins > 0 and outs > 0, family
            assert got.value("odock_dp_tokens_total", family=family, kind="input") == ins
            assert got.value("odock_dp_tokens_total", family=family, kind="output") == outs

        assert got.value("odock_dp_limit_rejections_total", code="rate_limit_exceeded") == statuses[429]
        # Every authenticated request looks its model up (limits are checked after the route).
        assert _sum(got, "odock_dp_governance_cache_lookups_total", table="route") == len(metered)
        assert _sum(got, "odock_dp_governance_cache_lookups_total", table="key", result="miss") >= 2
        assert _sum(got, "odock_dp_governance_cache_lookups_total", table="key", result="hit") >= 1
        assert _sum(got, "odock_dp_usage_records_total", result="submitted") == len(metered)
        assert got.value("odock_dp_usage_records_total", result="dropped") == 0
        assert got.value("odock_dp_workers") == workers
        assert got.value("odock_dp_control_plane_connected") == 1
        assert got.value("odock_dp_ready") == 1
        assert got.value("odock_dp_requests_in_flight") == 0
        assert 0 <= got.value("odock_dp_control_plane_staleness_seconds") < 30
        assert got.value("odock_dp_usage_queue_records") == 0
        assert _sum(got, "odock_dp_control_plane_rpcs_total", method="ResolveKey") >= 2
        for name, sample_labels in got.samples:  # bounded labels: no ids of any kind
            for _, value in sample_labels:
                assert not value.startswith(("key_", "org_", "req_", "odk-")), (name, sample_labels)
        if workers == 1:
            assert got.get("process_cpu_seconds_total") is not None
    finally:
        exit_code = await asyncio.to_thread(dp.process.stop)
    assert exit_code == 0, dp.process.stderr_text()[-3000:]
    assert "Traceback" not in dp.process.stderr_text()


async def test_metrics_listener_is_off_unless_configured(ops_cp: OpsControlPlane, tmp_path: Path) -> None:
    dp = await asyncio.to_thread(start_ops_dp, ops_cp.process, tmp_path / "spool", ODOCK_DP_METRICS_LISTEN="")
    try:
        assert dp.metrics is None
        async with httpx.AsyncClient(base_url=dp.url) as client:
            assert (await client.get("/metrics")).status_code == 404  # never on the public port
    finally:
        assert await asyncio.to_thread(dp.process.stop) == 0
