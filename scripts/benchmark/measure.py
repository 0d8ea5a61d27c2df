"""Measurements of one target ("arm"): a wrk run, a time-to-first-byte run, held streams and RSS.

Each factory prepares its files once and returns a coroutine function that performs one
measurement and returns flat metrics. A run that saw a non-2xx answer or a socket error
raises: a fast error is never a result.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.benchmark import streamclient, wrk
from scripts.benchmark.requests import Call
from scripts.benchmark.stack import Service, rss_bytes

Metrics = dict[str, float]
Arm = Callable[[bool], Awaitable[Metrics]]  # called with warmup=True once before the measured runs
_ids = itertools.count()


@dataclass(frozen=True)
class Knobs:
    """How long and how much: set by --quick / --smoke / the full run."""

    duration_s: int
    reps: int
    warmup_s: int
    ttfb_count: int
    held_streams: int
    load_cpus: str | None  # where the load generators run


def wrk_arm(
    service: Service,
    call: Call,
    workdir: Path,
    knobs: Knobs,
    *,
    connections: int,
    threads: int = 1,
    cpus: str | None = "default",
) -> Arm:
    """wrk against ``service`` with ``call`` at ``connections``."""
    n = next(_ids)
    body_file = workdir / f"body-{n}.json"
    body_file.write_bytes(call.body)
    script = wrk.write_script(workdir / f"post-{n}.lua", body_file, call.headers)
    url = service.url + call.path
    pin = knobs.load_cpus if cpus == "default" else cpus

    async def measure(warmup: bool) -> Metrics:
        duration = knobs.warmup_s if warmup else knobs.duration_s
        pids = service.worker_pids()
        before = cpu_seconds(pids)
        result = await wrk.run(url, script, connections=connections, threads=threads, duration_s=duration,
                               cpus=pin)  # fmt: skip
        used = cpu_seconds(pids) - before
        if result.non_2xx or result.errors or not result.requests:
            raise RuntimeError(f"{service.name} {call.path}: {result.non_2xx} non-2xx answers, "
                               f"{result.errors} socket errors in {result.requests} requests")  # fmt: skip
        return {"rps": result.rps, "p50_ms": result.p50_ms, "p90_ms": result.p90_ms, "p99_ms": result.p99_ms,
                "mean_ms": result.mean_ms, "cpu_us_per_req": used * 1e6 / result.requests}  # fmt: skip

    return measure


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far (0 for any that is gone)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def ttfb_arm(service: Service, call: Call, knobs: Knobs) -> Arm:
    """Sequential streamed requests on one keep-alive connection (concurrency 1)."""
    wire = streamclient.build_request(service.host, service.port, call.path, call.body, call.headers)

    async def measure(warmup: bool) -> Metrics:
        count = max(10, knobs.ttfb_count // 10) if warmup else knobs.ttfb_count
        r = await streamclient.measure_ttfb(service.host, service.port, wire, count)
        if r.errors:
            raise RuntimeError(f"{service.name} {call.path}: {r.errors} failed streams")
        return {"first_byte_p50_ms": r.first_byte_p50, "first_byte_p99_ms": r.first_byte_p99,
                "first_event_p50_ms": r.first_event_p50, "first_event_p99_ms": r.first_event_p99,
                "stream_p50_ms": r.total_p50}  # fmt: skip

    return measure


def held_streams_arm(service: Service, call: Call, knobs: Knobs) -> Arm:
    """RSS of the serving process idle and while holding ``knobs.held_streams`` slow streams."""
    wire = streamclient.build_request(service.host, service.port, call.path, call.body, call.headers)

    async def measure(warmup: bool) -> Metrics:
        if warmup:
            return {}
        pids = service.worker_pids()
        idle = max(rss_bytes(p) for p in pids)
        held = streamclient.HeldStreams()
        try:
            opened = await held.open(service.host, service.port, wire, knobs.held_streams)
            busy = max(rss_bytes(p) for p in pids)
        finally:
            await held.close()
        if opened != knobs.held_streams:
            why = ", ".join(f"{n} x {what}" for what, n in held.failures.most_common(3))
            raise RuntimeError(f"{service.name}: only {opened} of {knobs.held_streams} streams opened ({why})")
        await asyncio.sleep(0.5)  # let the proxy notice the disconnects before the next arm
        return {"rss_idle_mb": idle / 2**20, "rss_held_mb": busy / 2**20, "streams": float(opened)}

    return measure
