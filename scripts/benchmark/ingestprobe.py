"""What ingesting costs the control plane besides throughput: its CPU seconds and its loop stalls.

- CPU: the control-plane process's user+system time (``/proc/<pid>/stat``, every thread, SQLite
  included since it runs in-process) over the records stored, i.e. records per CPU-second of
  the control plane. Not wall time: the machine is shared, and a busy neighbour slows the wall
  clock, not the CPU a record costs.
- Stalls: a separate process (so this client's own loop, busy serialising batches, cannot
  delay it) sends a ``grpc.health.v1.Health/Check`` every ``PROBE_INTERVAL_S`` to the control
  plane while it ingests; the health servicer answers on the control plane's event loop, so
  the slowest answer bounds the longest stretch that loop could not run (plus one RPC). The
  idle figures (same probe, nothing ingested) are the RPC's own cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROBE_INTERVAL_S = 0.002
_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class LoopProbe:
    """Health-check pings in a child process from start() to stop(); stop() gives latency figures in ms."""

    def __init__(self, address: str, cpu: int | None) -> None:
        self._address = address
        self._cpu = cpu
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.benchmark.ingestprobe", self._address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if self._cpu is not None:
            os.sched_setaffinity(self._proc.pid, {self._cpu})
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"loop probe did not start: {line!r}")

    def stop(self) -> dict[str, float]:
        assert self._proc is not None
        out, _ = self._proc.communicate("stop\n", timeout=30)
        self._proc = None
        return dict(json.loads(out.strip().splitlines()[-1]))


def _probe(address: str) -> dict[str, Any]:
    import select

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = grpc.insecure_channel(address)
    stub: Any = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="")
    stub.Check(request, timeout=10)  # connected before the clock starts
    print("ready", flush=True)
    samples: list[float] = []
    while not select.select([sys.stdin], [], [], PROBE_INTERVAL_S)[0]:
        start = time.perf_counter()
        stub.Check(request, timeout=30)
        samples.append((time.perf_counter() - start) * 1000)
    channel.close()
    samples.sort()
    if not samples:
        return {"pings": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    return {"pings": len(samples), "p50_ms": round(samples[len(samples) // 2], 2),
            "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
            "max_ms": round(samples[-1], 2)}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1])), flush=True)
