"""How much of the machine other processes used while a scenario ran (the machine may be shared).

``/proc/stat`` gives the machine's busy time; the benchmark's own share is the CPU time of
this process tree (its services, their workers, and the reaped wrk runs). The difference,
over the wall time and the CPU count, is the foreign load that makes figures noisy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    """Wall clock, machine busy seconds and this tree's CPU seconds at one instant."""

    wall: float
    busy: float
    ours: float


def _machine_busy() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _stat(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # fields from "state" on: ppid is [1], utime [11], stime [12]


def _tree_cpu(root: int) -> float:
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(entry)
        if fields is None:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    total = 0.0
    for pid, cpu in times.items():
        p = pid
        while p > 1 and p != root:
            p = parents.get(p, 0)
        if p == root:
            total += cpu
    own = _stat(str(root))
    if own is not None:  # children already reaped (the wrk runs) count here
        total += (int(own[13]) + int(own[14])) / _TICK
    return total


def snapshot() -> CpuSnapshot:
    """The counters now."""
    return CpuSnapshot(time.monotonic(), _machine_busy(), _tree_cpu(os.getpid()))


def foreign_load(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """Percent of the machine's CPUs busy with other processes between two snapshots."""
    wall = end.wall - start.wall
    if wall <= 0:
        return 0.0
    foreign = (end.busy - start.busy) - (end.ours - start.ours)
    return max(0.0, 100.0 * foreign / (wall * (os.cpu_count() or 1)))
