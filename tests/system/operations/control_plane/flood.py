"""Flooding a control plane's usage stream from several "nodes" while timing governance RPCs.

Each node is one ReportUsage stream keeping ``window`` batches in flight (what
the data plane's shipper does after an outage, when its spool replays). The
prober calls AcquireLeases (a write: the org has a per-minute limit) and
ResolveKey one after the other and records each call's latency.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from odock import keyformat
from odock.v1 import node_pb2, node_pb2_grpc
from tests.control_plane.usage.env import batch, record

_runs = itertools.count(1)


@dataclass
class FloodResult:
    """Latencies (seconds) of the governance calls made during the flood, and what was ingested."""

    lease: list[float] = field(default_factory=list)
    resolve: list[float] = field(default_factory=list)
    lease_errors: list[str] = field(default_factory=list)
    records_acked: int = 0

    @staticmethod
    def p99(values: list[float]) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def make_batches(org_id: str, key_id: str, nodes: int, per_node: int, size: int) -> list[list[bytes]]:
    """Serialized batches for each node (unique request ids), built before the clock starts."""
    run = next(_runs)
    out: list[list[bytes]] = []
    for n in range(nodes):
        batches = []
        for b in range(per_node):
            recs = [record(org_id, key_id=key_id, request_id=f"fl{run}-{n}-{b}-{i}") for i in range(size)]
            batches.append(batch(recs, sequence=b + 1, node_id=f"flood-{n}").SerializeToString())
        out.append(batches)
    return out


async def _node(channel: grpc.aio.Channel, token: str, batches: list[bytes], window: int,
                stop: asyncio.Event, result: FloodResult) -> None:  # fmt: skip
    stub = node_pb2_grpc.NodeServiceStub(channel)
    slots = asyncio.Semaphore(window)

    async def requests() -> AsyncIterator[node_pb2.UsageBatch]:
        for raw in batches:
            await slots.acquire()
            if stop.is_set():
                return
            yield node_pb2.UsageBatch.FromString(raw)

    call = stub.ReportUsage(requests(), metadata=(("authorization", f"Bearer {token}"),))
    async for ack in call:
        result.records_acked += ack.accepted + ack.duplicates
        slots.release()


async def _probe(channel: grpc.aio.Channel, token: str, org_id: str, digest: bytes, stop: asyncio.Event,
                 result: FloodResult, timeout: float) -> None:  # fmt: skip
    stub = node_pb2_grpc.NodeServiceStub(channel)
    md = (("authorization", f"Bearer {token}"),)
    ask = node_pb2.LeaseAsk(org_id=org_id, metric=node_pb2.LIMIT_METRIC_REQUESTS_PER_MINUTE, want=1, need=1)
    while not stop.is_set():
        began = time.perf_counter()
        try:
            await stub.AcquireLeases(
                node_pb2.AcquireLeasesRequest(node_id="probe", asks=[ask]), metadata=md, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            result.lease_errors.append(exc.code().name)
        result.lease.append(time.perf_counter() - began)
        began = time.perf_counter()
        await stub.ResolveKey(node_pb2.ResolveKeyRequest(key_digest=digest), metadata=md, timeout=timeout)
        result.resolve.append(time.perf_counter() - began)
        await asyncio.sleep(0.02)


async def flood(address: str, token: str, org_id: str, key: str, pepper: bytes, batches: list[list[bytes]],
                *, seconds: float, window: int = 4, timeout: float = 10.0) -> FloodResult:  # fmt: skip
    """Flood for ``seconds`` (or until the batches run out) while probing; the result."""
    result = FloodResult()
    stop = asyncio.Event()
    # One channel per node, as separate data planes would have; the prober has its own.
    channels = [grpc.aio.insecure_channel(address) for _ in range(len(batches) + 1)]
    try:
        nodes = [asyncio.ensure_future(_node(ch, token, b, window, stop, result))
                 for ch, b in zip(channels, batches, strict=False)]  # fmt: skip
        await asyncio.sleep(0.5)  # let the backlog build before measuring
        digest = keyformat.digest(pepper, key)
        probe = asyncio.ensure_future(_probe(channels[-1], token, org_id, digest, stop, result, timeout))
        done_nodes = asyncio.gather(*nodes)
        try:
            await asyncio.wait_for(asyncio.shield(done_nodes), seconds)
        except TimeoutError:
            pass
        stop.set()
        await probe
        for task in nodes:
            task.cancel()
        await asyncio.gather(*nodes, return_exceptions=True)
    finally:
        for ch in channels:
            await ch.close()
    return result
