"""Real planes for the usage tests: a control plane on a fixed port (restartable at the same
address), data planes with a spool directory and fast usage batching, priced models on the fake
provider, and queries through the real UsageService."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client.parser import text_string_to_metric_families

from odock.v1 import common_pb2, node_pb2, usage_pb2, usage_pb2_grpc
from tests.data_plane.usage.faults import CONTROL_ENV
from tests.fakes.provider import FakeProvider
from tests.support.dataplane import DataPlaneProcess, data_plane_env, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.provision import STANDARD_MODELS, Provisioned, Provisioner
from tests.support.secrets import PlaneSecrets
from tests.support.spawn import READY_FILE, launch, new_workdir

# Batches sealed every 50 ms; unacked batches spooled after 0.3 s; a stream owing an ack for
# 3 s is restarted; shutdown flushes for up to 3 s.
USAGE_ENV = {
    "ODOCK_USAGE_BATCH_AGE_SECONDS": "0.05",
    "ODOCK_USAGE_SPILL_SECONDS": "0.3",
    "ODOCK_USAGE_ACK_TIMEOUT_SECONDS": "3",
    "ODOCK_USAGE_FLUSH_SECONDS": "3",
}
# micro-USD per million tokens; distinct per model so a cost computed with the wrong model shows.
PRICES: dict[str, common_pb2.Pricing] = {
    "gpt-chat": common_pb2.Pricing(
        input_per_mtok_micros=2_500_000,
        output_per_mtok_micros=10_000_000,
        cached_input_per_mtok_micros=1_250_000,
    ),
    "text-embed": common_pb2.Pricing(input_per_mtok_micros=20_000),
    "image-gen": common_pb2.Pricing(input_per_mtok_micros=5_000_000, output_per_mtok_micros=40_000_000),
    "claude": common_pb2.Pricing(input_per_mtok_micros=3_000_000, output_per_mtok_micros=15_000_000),
    "gemini-flash": common_pb2.Pricing(input_per_mtok_micros=300_000, output_per_mtok_micros=2_500_000),
    "llama": common_pb2.Pricing(input_per_mtok_micros=100_003, output_per_mtok_micros=200_009),
    "bge": common_pb2.Pricing(input_per_mtok_micros=10_007),
    "whisper": common_pb2.Pricing(input_per_mtok_micros=6_011, output_per_mtok_micros=7_013),
}


def free_port() -> int:
    """A port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cp(db: Path, listen: str, secrets: PlaneSecrets | None = None) -> ControlPlaneProcess:
    """A control plane on SQLite ``db`` listening on ``listen`` (same secrets when restarting)."""
    return start_control_plane(f"sqlite:///{db}", extra_env={"ODOCK_CP_LISTEN": listen}, secrets=secrets)


def start_dp(cp: ControlPlaneProcess, spool: Path, **env: str) -> DataPlaneProcess:
    """A connected data plane spooling into ``spool``, with fast usage batching (``env`` overrides)."""
    dp = start_data_plane(
        cp.address, cp.node_token, cp.pepper,
        extra_env={**USAGE_ENV, "ODOCK_USAGE_SPOOL_DIR": str(spool), **env},
    )  # fmt: skip
    dp.wait_connected()
    return dp


def start_faulty_dp(cp: ControlPlaneProcess, spool: Path, control: Path, **env: str) -> DataPlaneProcess:
    """``start_dp`` with the spool's disk behind ``tests.data_plane.usage.faults`` (its modes read from ``control``)."""
    workdir = new_workdir("odock-dp-")
    extra = {
        **USAGE_ENV, "ODOCK_DP_METRICS_LISTEN": "127.0.0.1:0", "ODOCK_USAGE_SPOOL_DIR": str(spool),
        CONTROL_ENV: str(control), **env,
    }  # fmt: skip
    full_env = data_plane_env(cp.address, cp.node_token, cp.pepper, workdir / READY_FILE, extra_env=extra)
    argv = [sys.executable, "-m", "tests.data_plane.usage.faults", "--workers", "1"]
    dp, ready = launch(DataPlaneProcess, argv, full_env, workdir, timeout=30.0)
    dp.url = "http://" + str(ready["http"])
    dp.metrics_url = "http://" + str(ready["metrics"])
    dp.wait_connected()
    return dp


def metric(dp: DataPlaneProcess, name: str, **labels: str) -> float:
    """One sample of the node's /metrics (0 when absent)."""
    text = httpx.get(f"{dp.metrics_url}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


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


async def traffic(dp: DataPlaneProcess, org: Provisioned, count: int, *, stream: bool = False) -> list[str]:
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


async def assert_exactly(stack: Stack, org: Provisioned, ids: list[str]) -> None:
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


def stop_cp(stack: Stack) -> None:
    assert stack.cp.stop() == 0


def cost(pricing: common_pb2.Pricing, input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    """Expected cost in pico-USD."""
    cached_price = (
        pricing.cached_input_per_mtok_micros
        if pricing.HasField("cached_input_per_mtok_micros")
        else pricing.input_per_mtok_micros
    )
    return (
        (input_tokens - cached) * pricing.input_per_mtok_micros
        + cached * cached_price
        + output_tokens * pricing.output_per_mtok_micros
    )


async def provision_priced(cp: ControlPlaneProcess, fake: FakeProvider) -> Provisioned:
    """An org (no limits) with the standard models on ``fake``, priced per ``PRICES``, and an all-models key."""
    async with Provisioner.connect(cp.address, cp.admin_token) as admin:
        org = await admin.create_org(tier="enterprise")  # no limits: usage tests meter, not refuse
        creds = {}
        for family in dict.fromkeys(s.family for s in STANDARD_MODELS):
            creds[family] = await admin.create_credential(
                org.id, family, fake.secret(family), name=f"{family}-c"
            )
        models = {}
        for spec in STANDARD_MODELS:
            models[spec.name] = await admin.create_model(
                org.id, spec.name, spec.family, spec.slug, fake.base_url(spec.family), creds[spec.family].name,
                pricing=PRICES[spec.name],
            )  # fmt: skip
        key_row, key = await admin.create_key(org.id)
    return Provisioned(org=org, key=key, key_row=key_row, models=models, credentials=creds)


class UsageQueries:
    """UsageService calls with the super-admin token."""

    def __init__(self, cp: ControlPlaneProcess) -> None:
        self._channel = grpc.aio.insecure_channel(cp.address)
        self._stub = usage_pb2_grpc.UsageServiceStub(self._channel)
        self._md = (("authorization", f"Bearer {cp.admin_token}"),)

    async def close(self) -> None:
        await self._channel.close()

    async def find(self, request_id: str) -> node_pb2.UsageRecord | None:
        """The stored record, or None."""
        try:
            resp = await self._stub.GetUsageRecord(
                usage_pb2.GetUsageRecordRequest(request_id=request_id), metadata=self._md, timeout=5
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return resp.record

    async def record(self, request_id: str, timeout: float = 15.0) -> node_pb2.UsageRecord:
        """Wait (bounded) for the record of ``request_id``."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.find(request_id)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for {request_id} after {timeout}s")
            await asyncio.sleep(0.05)

    async def totals(self, org_id: str) -> usage_pb2.UsageTotals:
        """The org's totals over the last day (one bucket)."""
        start = Timestamp()
        start.FromDatetime(datetime.now(UTC) - timedelta(days=1))
        end = Timestamp()
        end.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
        resp = await self._stub.GetUsageTotals(
            usage_pb2.GetUsageTotalsRequest(
                org_id=org_id, start_time=start, end_time=end, bucket=usage_pb2.USAGE_BUCKET_TOTAL
            ),
            metadata=self._md,
            timeout=5,
        )
        return resp.totals[0] if resp.totals else usage_pb2.UsageTotals()

    async def wait_requests(self, org_id: str, count: int, timeout: float = 20.0) -> usage_pb2.UsageTotals:
        """Wait until the org's totals count ``count`` requests (fails on more, or on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            totals = await self.totals(org_id)
            assert totals.requests <= count, f"more records than requests: {totals.requests} > {count}"
            if totals.requests == count:
                return totals
            if time.monotonic() > deadline:
                raise AssertionError(f"{totals.requests} of {count} records after {timeout}s")
            await asyncio.sleep(0.1)


def usage_status(dp: DataPlaneProcess) -> dict[str, Any]:
    """The ``usage`` part of the node's /readyz status."""
    status: dict[str, Any] = dp.status()["usage"]  # type: ignore[assignment]
    return status


async def wait_usage(dp: DataPlaneProcess, ok: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Poll the node's usage status until ``ok(status)``."""
    deadline = time.monotonic() + timeout
    while True:
        status = usage_status(dp)
        if ok(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"usage status never matched: {status}")
        await asyncio.sleep(0.05)


def request_ids(responses: Iterable[Any]) -> list[str]:
    """The gateway's record ids of some responses (x-odock-request-id)."""
    return [r.headers["x-odock-request-id"] for r in responses]


async def cached_then_down(stack: Stack, dp: DataPlaneProcess, org: Provisioned) -> list[str]:
    """One request with the control plane up (the node caches grant and route), then stop it."""
    ids = await traffic(dp, org, 1)
    await wait_usage(dp, lambda s: s["acked_batches"] >= 1)
    await asyncio.to_thread(stop_cp, stack)
    return ids
