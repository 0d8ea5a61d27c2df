"""Micro-benchmark of the usage path's cost per record and of its durability bound.

    .venv/bin/python -m tests.data_plane.usage.bench_wal [--rate 3000] [--seconds 5] [--dir /tmp/x]

1. ``submit``: CPU time of the request path's one call (``Shipper.submit``), 200,000 calls on an
   idle loop (no background tasks running): the hot path.
2. The background work per record at a steady ``--rate`` records/s for ``--seconds`` (the
   journal's group commit every ``ODOCK_USAGE_COMMIT_SECONDS``: serialise, one pwrite, one
   fdatasync, in an executor thread): the commit thread's CPU time per record, the whole
   process's (the benchmark's 1 ms pacing loop included), and each record's time from
   submission to the end of the fdatasync that made it durable (p50/p99/max), on the directory
   given (default: a temporary directory, so the machine's real disk).

Records are realistic (ids, org/key/model names, tokens, latencies, a timestamp). Prints one
JSON line. Figures are recorded in docs/benchmarks.md; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from data_plane.settings import UsageSettings
from data_plane.usage.shipper import Shipper
from odock.v1 import common_pb2, node_pb2


class _NoStream:
    def report_usage(self) -> Any:
        raise ConnectionError("no control plane in this benchmark")


def record(i: int) -> node_pb2.UsageRecord:
    rec = node_pb2.UsageRecord(
        request_id=f"req_{os.urandom(12).hex()}", node_id="node-1", org_id=f"org_{i % 8}", key_id=f"key_{i % 64}",
        model_name="gpt-4.1-mini", upstream_slug="gpt-4.1-mini-2025-04-14", family=common_pb2.PROVIDER_FAMILY_OPENAI,
        endpoint="/v1/chat/completions", http_status=200, outcome=common_pb2.OUTCOME_COMPLETE, streamed=True,
        input_tokens=812, output_tokens=240, cached_input_tokens=128, cost_picos=4_430_000_000,
        latency_us=1_843_211, upstream_latency_us=1_842_004, time_to_first_byte_us=312_554,
    )  # fmt: skip
    rec.time.GetCurrentTime()
    return rec


def submit_ns(directory: Path, calls: int = 40_000, reps: int = 5) -> float:
    """The median over ``reps`` fresh shippers (``calls`` stays under the commit queue's bound)."""
    runs = []
    records = [record(i) for i in range(calls)]
    for _ in range(reps):
        shipper = Shipper(_NoStream(), UsageSettings(spool_dir=directory), "node-1")
        submit = shipper.submit
        started = time.process_time()
        for r in records:
            submit(r)
        runs.append((time.process_time() - started) / calls * 1e9)
    return sorted(runs)[reps // 2]


async def steady(directory: Path, rate: int, seconds: float) -> dict[str, float]:
    settings = UsageSettings(spool_dir=directory, spill_after=3600.0, memory_max=10**7)
    shipper = Shipper(_NoStream(), settings, "node-1")
    journal = shipper.journal
    submitted: list[float] = []  # submit times, in order: commits take records in that order
    durable: list[float] = []
    append = journal._append
    commit_cpu = [0.0]

    def timed(groups: list[list[bytes]]) -> Any:
        cpu = time.thread_time()
        out = append(groups)
        done = time.monotonic()
        commit_cpu[0] += time.thread_time() - cpu
        first = len(durable)
        durable.extend(done - t for t in submitted[first : first + sum(map(len, groups))])
        return out

    journal._append = timed  # type: ignore[method-assign]
    records = [record(i) for i in range(int(rate * seconds))]
    await shipper.start()
    tick = 0.001
    per_tick = rate * tick
    cpu = time.process_time()
    start = time.monotonic()
    sent = 0.0
    for r in records:
        while sent >= per_tick * ((time.monotonic() - start) / tick):
            await asyncio.sleep(tick)
        submitted.append(time.monotonic())
        shipper.submit(r)
        sent += 1
    await asyncio.sleep(settings.commit_interval * 3)
    cpu = time.process_time() - cpu
    await shipper.close()
    durable.sort()

    def pick(q: float) -> float:
        return round(durable[min(len(durable) - 1, int(q * len(durable)))] * 1000, 2)

    return {
        "records": len(records),
        "durable": len(durable),
        "process_cpu_us_per_record": round(cpu / len(records) * 1e6, 2),  # the pacing loop included
        "commit_thread_cpu_us_per_record": round(commit_cpu[0] / len(records) * 1e6, 2),
        "durable_ms_p50": pick(0.5),
        "durable_ms_p99": pick(0.99),
        "durable_ms_max": pick(1.0),
        "commits": journal.commits,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="odock-bench-wal-", dir=args.dir) as tmp:
        result: dict[str, Any] = {"submit_ns": round(submit_ns(Path(tmp) / "idle"), 1)}
        result.update(asyncio.run(steady(Path(tmp) / "steady", args.rate, args.seconds)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
