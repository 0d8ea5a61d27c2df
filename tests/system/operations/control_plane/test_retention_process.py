"""A real control plane prunes a backlog of old usage in bounded batches while leases stay fast."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from control_plane.store.background import BackgroundDatabase
from control_plane.store.tables import UsageRecordRow
from control_plane.usage import ingest_batch
from odock.v1 import node_pb2, node_pb2_grpc
from tests.control_plane.usage.env import batch, record
from tests.support.planes import start_control_plane
from tests.support.provision import Provisioner
from tests.system.operations.control_plane.flood import FloodResult

OLD_RECORDS = 20_000
BATCH_ROWS = 5000  # control_plane.usage.retention.BATCH_ROWS, the bound asserted from the log
LEASE_P99_BOUND_S = 0.2


def _count(store: BackgroundDatabase) -> int:
    with store.engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(UsageRecordRow)) or 0)


async def test_backlog_pruned_in_batches_while_leases_stay_fast(migrated_db_url: str) -> None:
    store = BackgroundDatabase.open(migrated_db_url, 2)
    old = datetime.now(UTC) - timedelta(days=45)
    try:
        for b in range(OLD_RECORDS // 1000):
            recs = [record(request_id=f"old-{b}-{i}", when=old - timedelta(minutes=i)) for i in range(1000)]
            await ingest_batch(store, batch(recs))
        await ingest_batch(store, batch([record(request_id="fresh", when=datetime.now(UTC))]))
        cp = start_control_plane(migrated_db_url, extra_env={
            "ODOCK_MIGRATE": "off", "ODOCK_LOG_LEVEL": "debug", "ODOCK_USAGE_PRUNE_SECONDS": "1",
            "ODOCK_USAGE_RETENTION_DAYS": "30",
        })  # fmt: skip
        latencies: list[float] = []
        try:
            async with Provisioner.connect(cp.address, cp.admin_token) as admin:
                org = await admin.create_org(tier="free")
                node = node_pb2_grpc.NodeServiceStub(admin.channel)
                ask = node_pb2.LeaseAsk(org_id=org.id, metric=node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE,
                                        want=1, need=1)  # fmt: skip
                md = (("authorization", f"Bearer {cp.node_token}"),)
                # Untimed first call: opens connections and creates the limit counter.
                await node.AcquireLeases(node_pb2.AcquireLeasesRequest(node_id="n", asks=[ask]), metadata=md)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    began = time.perf_counter()
                    await node.AcquireLeases(node_pb2.AcquireLeasesRequest(node_id="n", asks=[ask]),
                                             metadata=md, timeout=10)  # fmt: skip
                    latencies.append(time.perf_counter() - began)
                    if len(latencies) % 10 == 0 and await asyncio.to_thread(_count, store) <= 1:
                        break
                    await asyncio.sleep(0.01)
                remaining = await asyncio.to_thread(_count, store)
            for _ in range(1000):  # the run's summary follows its last batch (and the rollups' step)
                done = re.findall(r"usage retention: deleted (\d+) records", cp.stderr_text())
                if sum(int(n) for n in done) >= OLD_RECORDS:
                    break
                await asyncio.sleep(0.02)
        finally:
            assert cp.stop() == 0, cp.stderr_text()[-3000:]
    finally:
        await asyncio.to_thread(store.close)
    assert remaining == 1, "the backlog was not pruned"
    log = cp.stderr_text()
    sizes = [int(n) for n in re.findall(r"deleted a batch of (\d+) records", log)]
    assert sum(sizes) == OLD_RECORDS and max(sizes) <= BATCH_ROWS and len(sizes) >= OLD_RECORDS // BATCH_ROWS
    # One run's summary, or several when a run failed under load and the next finished the backlog.
    summaries = [int(n) for n in re.findall(r"usage retention: deleted (\d+) records", log)]
    assert sum(summaries) == OLD_RECORDS, summaries
    p99 = FloodResult.p99(latencies)
    print(f"\n{migrated_db_url.split(':')[0]}: {len(latencies)} leases while pruning {OLD_RECORDS} records in "
          f"{len(sizes)} batches: p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
          f"slowest {[round(x * 1000) for x in sorted(latencies)[-5:]]}")  # fmt: skip
    assert p99 < LEASE_P99_BOUND_S
