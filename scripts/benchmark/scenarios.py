"""The scenarios, their targets (from issue 6), and the interleaved runner.

Every scenario measures its arms (direct = the fake upstream itself, floor = the bare
pass-through, gateway = Odock's data plane) in a rotating order, ``reps`` times, and reports
each metric's median with min and max. Targets compare medians within the same run.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.benchmark import cpu
from scripts.benchmark.measure import Arm, Knobs, Metrics, held_streams_arm, ttfb_arm, wrk_arm
from scripts.benchmark.requests import chat_call, messages_call, routed_call, translated_call
from scripts.benchmark.stack import Service
from scripts.benchmark.stats import summary

SLOW_STREAM = {"x-fake-interval-ms": "1000", "x-fake-tokens": "3600"}  # an hour-long stream


@dataclass(frozen=True)
class Check:
    """One target: ``value`` compared with ``limit``."""

    name: str
    value: float
    op: str  # "<=", "<", ">="
    limit: float
    unit: str

    @property
    def met(self) -> bool:
        return {"<=": self.value <= self.limit, "<": self.value < self.limit,
                ">=": self.value >= self.limit}[self.op]  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {"target": self.name, "value": round(self.value, 3), "op": self.op, "limit": self.limit,
                "unit": self.unit, "met": self.met}  # fmt: skip


Medians = dict[str, dict[str, float]]  # arm -> metric -> median


@dataclass(frozen=True)
class Bench:
    """What scenarios need to build their arms."""

    services: dict[str, Service]  # direct, floor, gateway, gateway-2w
    key: str
    workdir: Path
    knobs: Knobs


@dataclass(frozen=True)
class Scenario:
    """A named measurement over several arms, with the targets its medians are held to."""

    name: str
    description: str
    arms: tuple[str, ...]
    build: Callable[[Bench, str], Arm]
    checks: Callable[[Medians], list[Check]]
    headline: tuple[str, ...]  # metrics shown in the markdown table


def _ratio(m: Medians, arm: str, base: str, metric: str) -> float:
    return m[arm][metric] / m[base][metric] if m[base][metric] else 0.0


ABC = ("direct", "floor", "gateway")


def _wrk(
    maker: Callable[[str, str], Any], connections: int, threads: int = 1, pinned: bool = True
) -> Callable[[Bench, str], Arm]:
    def build(bench: Bench, arm: str) -> Arm:
        call = maker(arm, bench.key)
        return wrk_arm(bench.services[arm], call, bench.workdir, bench.knobs, connections=connections,
                       threads=threads, cpus="default" if pinned else None)  # fmt: skip

    return build


def _ttfb(maker: Callable[[str, str], Any]) -> Callable[[Bench, str], Arm]:
    def build(bench: Bench, arm: str) -> Arm:
        return ttfb_arm(bench.services[arm], maker(arm, bench.key), bench.knobs)

    return build


def _held(bench: Bench, arm: str) -> Arm:
    return held_streams_arm(bench.services[arm], chat_call(arm, bench.key, stream=True, extra=SLOW_STREAM),
                            bench.knobs)  # fmt: skip


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "chat_c1",
        "non-streaming chat, concurrency 1: latency",
        ABC,
        _wrk(lambda a, k: chat_call(a, k), 1),
        lambda m: [
            Check(
                "added p50 latency over the floor's",
                m["gateway"]["p50_ms"] - m["floor"]["p50_ms"],
                "<=",
                0.3,
                "ms",
            ),
            Check(
                "added p99 latency (gateway p99 - direct p99)",
                m["gateway"]["p99_ms"] - m["direct"]["p99_ms"],
                "<=",
                2.0,
                "ms",
            ),
        ],
        ("p50_ms", "p99_ms"),
    ),
    Scenario(
        "chat_c64",
        "non-streaming chat, concurrency 64: throughput",
        ABC,
        _wrk(lambda a, k: chat_call(a, k), 64),
        lambda m: [Check("requests/s vs the floor's", _ratio(m, "gateway", "floor", "rps"), ">=", 0.75, "x")],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "stream_ttfb_c1",
        "streaming chat, concurrency 1: time to first byte / first SSE event",
        ABC,
        _ttfb(lambda a, k: chat_call(a, k, stream=True)),
        lambda m: [
            Check(
                "added time to first byte over the floor's",
                m["gateway"]["first_byte_p50_ms"] - m["floor"]["first_byte_p50_ms"],
                "<=",
                0.3,
                "ms",
            ),
            Check(
                "added time to first SSE event over the floor's",
                m["gateway"]["first_event_p50_ms"] - m["floor"]["first_event_p50_ms"],
                "<=",
                0.3,
                "ms",
            ),
        ],
        ("first_byte_p50_ms", "first_event_p50_ms", "first_event_p99_ms"),
    ),
    Scenario(
        "stream_c16",
        "streaming chat (24 SSE events incl. usage), concurrency 16: streams/s",
        ABC,
        _wrk(lambda a, k: chat_call(a, k, stream=True), 16),
        lambda m: [Check("streams/s vs the floor's", _ratio(m, "gateway", "floor", "rps"), ">=", 0.75, "x")],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "delay50_c64",
        "non-streaming chat, upstream answers after 50 ms, concurrency 64",
        ABC,
        _wrk(lambda a, k: chat_call(a, k, extra={"x-fake-delay-ms": "50"}), 64),
        lambda m: [Check("requests/s vs direct", _ratio(m, "gateway", "direct", "rps"), ">=", 0.93, "x")],
        ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "body_1mb_c8",
        "non-streaming chat with a 1 MB request body, concurrency 8",
        ABC,
        _wrk(lambda a, k: chat_call(a, k, pad_to=1 << 20), 8),
        lambda m: [],
        ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "anthropic_stream_c16",
        "Anthropic messages streaming, concurrency 16: streams/s",
        ABC,
        _wrk(lambda a, k: messages_call(a, k), 16),
        lambda m: [],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "translated_stream_c16",
        "an Anthropic model streamed through OpenAI chat completions (translated both ways) vs the same "
        "model streamed natively through /v1/messages, concurrency 16: CPU per stream",
        ("gateway", "gateway-translated"),
        _wrk(lambda a, k: translated_call(k) if a == "gateway-translated" else messages_call(a, k), 16),
        lambda m: [
            Check(
                "translated CPU per stream vs native",
                _ratio(m, "gateway-translated", "gateway", "cpu_us_per_req"),
                "<=",
                1.3,
                "x",
            )
        ],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "routed_c64",
        "non-streaming chat, concurrency 64, for a model behind three healthy deployments (weighted "
        "5/3/2, a fallback model) vs the same model with one deployment, on the same data plane: CPU per request",
        ("gateway", "gateway-routed"),
        _wrk(lambda a, k: routed_call(k) if a == "gateway-routed" else chat_call(a, k), 64),
        lambda m: [
            Check(
                "routed CPU per request vs one deployment",
                _ratio(m, "gateway-routed", "gateway", "cpu_us_per_req"),
                "<=",
                1.05,
                "x",
            )
        ],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "anthropic_ttfb_c1",
        "Anthropic messages streaming, concurrency 1: time to first SSE event",
        ABC,
        _ttfb(lambda a, k: messages_call(a, k)),
        lambda m: [],
        ("first_byte_p50_ms", "first_event_p50_ms", "first_event_p99_ms"),
    ),
    Scenario(
        "workers_c64",
        "non-streaming chat, concurrency 64: 2 workers on both cores vs 1 worker on one core "
        "(load generator unpinned, 2 threads)",
        ("gateway", "gateway-2w"),
        _wrk(lambda a, k: chat_call(a, k), 64, threads=2, pinned=False),
        lambda m: [
            Check(
                "2 workers' requests/s vs 1 worker's",
                _ratio(m, "gateway-2w", "gateway", "rps"),
                ">=",
                1.7,
                "x",
            )
        ],
        ("rps", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "memory_streams",
        "RSS of one worker holding slow concurrent streams (1 event/s)",
        ("floor", "gateway"),
        _held,
        lambda m: [
            Check("gateway worker RSS holding the streams", m["gateway"]["rss_held_mb"], "<", 150.0, "MB")
        ],
        ("rss_idle_mb", "rss_held_mb"),
    ),
)
BY_NAME = {s.name: s for s in SCENARIOS}


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def run_scenario(scenario: Scenario, bench: Bench) -> dict[str, Any]:
    """Warm up every arm, then ``reps`` rounds in rotating order; medians, min-max, targets."""
    arms = {name: scenario.build(bench, name) for name in scenario.arms}
    before = cpu.snapshot()
    if bench.knobs.warmup_s > 0:
        for arm in arms.values():
            await arm(True)
    runs: dict[str, list[Metrics]] = {name: [] for name in arms}
    order = list(arms)
    for rep in range(bench.knobs.reps):
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            metrics = await arms[name](False)
            runs[name].append(metrics)
            log(f"{scenario.name} rep {rep + 1}/{bench.knobs.reps} {name}: "
                + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()))  # fmt: skip
    result_arms = {name: {metric: summary([r[metric] for r in rs]) for metric in rs[0]}
                   for name, rs in runs.items()}  # fmt: skip
    medians = {name: {metric: statistics.median([r[metric] for r in rs]) for metric in rs[0]}
               for name, rs in runs.items()}  # fmt: skip
    checks = scenario.checks(medians)
    foreign = cpu.foreign_load(before, cpu.snapshot())
    log(f"{scenario.name}: other processes used {foreign:.0f}% of the machine meanwhile")
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "reps": bench.knobs.reps,
        "duration_s": bench.knobs.duration_s,
        "foreign_cpu_pct": round(foreign, 1),
        "headline": list(scenario.headline),
        "arms": result_arms,
        "targets": [c.as_json() for c in checks],
    }


def select(names: Sequence[str] | None) -> list[Scenario]:
    """The scenarios named (all when None), in the canonical order."""
    if not names:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    return [s for s in SCENARIOS if s.name in names]
