"""Micro-benchmark: the longest stall of a data-plane worker's event loop while its usage ships.

    .venv/bin/python -m tests.data_plane.usage.bench_ship [--rate 5000] [--seconds 4]

A real Shipper (journal, spool in a temporary directory, its background tasks) submits
``--rate`` records/s for ``--seconds``; the stream is a stand-in for the gRPC call that
serialises each written batch (``UsageBatch.SerializeToString``, as grpc.aio does on the loop)
and acks it 1 ms later. Meanwhile a probe sleeps 1 ms at a time and records how late it wakes
(wall: the longest stretch the loop could not serve a request, OS preemption included) and the
loop thread's CPU time over each such interval (work on the loop only, what the shipper
controls). The same probe runs first with no records (the machine's own jitter). Prints one JSON line; figures go
to docs/benchmarks.md, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from data_plane.settings import UsageSettings
from data_plane.usage.shipper import Shipper
from odock.v1 import node_pb2
from tests.data_plane.usage.bench_wal import record

TICK = 0.001


class _Call:
    def __init__(self) -> None:
        self._acks: asyncio.Queue[Any] = asyncio.Queue()
        self.records = 0

    async def write(self, encoded: bytes) -> None:
        batch = node_pb2.UsageBatch.FromString(encoded)  # what the control plane reads
        self.records += len(batch.records)
        ack = node_pb2.UsageAck(sequence=batch.sequence, accepted=len(batch.records))
        asyncio.get_running_loop().call_later(0.001, self._acks.put_nowait, ack)

    async def read(self) -> Any:
        return await self._acks.get()

    async def done_writing(self) -> None:
        self._acks.put_nowait(grpc.aio.EOF)

    def cancel(self) -> bool:
        return True


class _Streams:
    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def report_usage(self) -> Any:
        self.calls.append(_Call())
        return self.calls[-1]


async def _probe(stop: asyncio.Event, lateness: list[float], cpu: list[float]) -> None:
    # Wall lateness includes the OS preempting this process (a shared machine); the loop
    # thread's CPU time over the same interval counts only work done on the loop.
    while not stop.is_set():
        start, start_cpu = time.perf_counter(), time.thread_time()
        await asyncio.sleep(TICK)
        lateness.append(time.perf_counter() - start - TICK)
        cpu.append(time.thread_time() - start_cpu)


def _ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 3)


async def run(directory: Path, rate: int, seconds: float) -> dict[str, float]:
    idle: list[float] = []
    idle_cpu: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(stop, idle, idle_cpu))
    await asyncio.sleep(1.0)
    stop.set()
    await probe
    streams = _Streams()
    shipper = Shipper(streams, UsageSettings(spool_dir=directory, batch_size=500), "node-1")
    records = [record(i) for i in range(int(rate * seconds))]
    await shipper.start()
    busy: list[float] = []
    busy_cpu: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(stop, busy, busy_cpu))
    start = time.monotonic()
    for sent, r in enumerate(records):
        while sent >= rate * (time.monotonic() - start):
            await asyncio.sleep(TICK)
        shipper.submit(r)
    deadline = time.monotonic() + 10
    while sum(c.records for c in streams.calls) < len(records) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    await probe
    await shipper.close()
    shipped = sum(c.records for c in streams.calls)
    return {"records": len(records), "shipped": shipped, "idle_late_ms_p99": _ms(idle, 0.99),
            "idle_late_ms_max": _ms(idle, 1.0), "late_ms_p50": _ms(busy, 0.5), "late_ms_p99": _ms(busy, 0.99),
            "late_ms_p999": _ms(busy, 0.999), "late_ms_max": _ms(busy, 1.0),
            "idle_loop_cpu_ms_max": _ms(idle_cpu, 1.0), "loop_cpu_ms_p99": _ms(busy_cpu, 0.99),
            "loop_cpu_ms_p999": _ms(busy_cpu, 0.999), "loop_cpu_ms_max": _ms(busy_cpu, 1.0)}  # fmt: skip


def _best_ms(fn: Any, reps: int = 30) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return round(best * 1000, 3)


def steps(batch: int = 500, commit: int = 250) -> dict[str, float]:
    """The longest single stretches each way of shipping holds the interpreter (best of 30, CPU ms).

    Before: a send copied all ``batch`` records into the outgoing message in one loop step, and
    a commit encoded its ``commit`` records (50 ms at 5,000 records/s) in one C call holding the
    GIL. Then: a send copied ``SEND_SLICE`` (100) records per loop step and grpc.aio encoded the
    whole message. Now: each record is encoded at submit (its cost per record is shown), so a
    commit and a send only join bytes.
    """
    from data_plane.usage.frames import record_frame

    records = [record(i) for i in range(batch)]
    frames = [record_frame(r) for r in records]
    header = node_pb2.UsageBatch(node_id="node-1").SerializeToString()

    def old_send() -> None:
        for r in records:
            r.attempt += 1
        node_pb2.UsageBatch(node_id="node-1", sequence=1, records=records)

    def sliced_send_step() -> None:
        message = node_pb2.UsageBatch(node_id="node-1", sequence=1)
        part = records[:100]
        for r in part:
            r.attempt += 1
        message.records.extend(part)

    def new_send() -> None:
        node_pb2.UsageBatch(node_id="node-1", sequence=1, attempt=1).SerializeToString() + b"".join(frames)

    full = node_pb2.UsageBatch(node_id="node-1", sequence=1, records=records)
    one = records[0]
    return {
        "send_step_before_ms": _best_ms(old_send),
        "send_step_sliced_ms": _best_ms(sliced_send_step),
        "send_serialise_before_ms": _best_ms(full.SerializeToString),  # grpc.aio's, before
        "send_now_ms": _best_ms(new_send),  # the whole send: one head and a join
        "commit_gil_before_ms": _best_ms(
            lambda: node_pb2.UsageBatch(node_id="node-1", records=records[:commit]).SerializeToString()),
        "commit_gil_now_ms": _best_ms(lambda: header + b"".join(frames[:commit])),
        "submit_encode_us": round(_best_ms(lambda: [record_frame(one) for _ in range(1000)]), 3),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--steps", action="store_true", help="only the per-step micro-benchmark")
    args = parser.parse_args()
    if args.steps:
        print(json.dumps(steps()))
        return
    with tempfile.TemporaryDirectory(prefix="odock-bench-ship-") as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp), args.rate, args.seconds))))


if __name__ == "__main__":
    main()
