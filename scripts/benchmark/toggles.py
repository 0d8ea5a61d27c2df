"""``scripts/bench-toggles``: what usage metering and limits cost the data plane (issues 4 and 5).

Three 1-worker data planes on the same core, all behind one control plane and the fast fake
upstream, differing only in one setting:

- ``gateway-metering-on`` / ``gateway-metering-off``: ``ODOCK_USAGE_METERING`` (both with
  ``ODOCK_LIMITS=off``, which metering off requires, so the pair isolates metering: the stream
  tap, the record, and shipping it to the control plane);
- ``gateway-limits-on`` / ``gateway-limits-off``: ``ODOCK_LIMITS`` (both metered; the bench org
  has every limit set, far above reach, so each request is checked and none refused).
  ``gateway-limits-off`` is the same process as ``gateway-metering-on``.

Arms run interleaved in rotating order (``scenarios.run_scenario``), medians with min–max.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from scripts.benchmark import report, wrk
from scripts.benchmark.__main__ import check_answers, core_plan, raise_fd_limit, stopping
from scripts.benchmark.ingest import shown_command
from scripts.benchmark.measure import Knobs
from scripts.benchmark.provision import provision
from scripts.benchmark.requests import chat_call
from scripts.benchmark.scenarios import Bench, Check, Scenario, _ttfb, _wrk, log, run_scenario
from scripts.benchmark.stack import (
    REPO_ROOT,
    start_control_plane,
    start_data_plane,
    start_upstream,
    wait_connected,
)

BEGIN = "<!-- bench:toggles:begin -->"
END = "<!-- bench:toggles:end -->"
METERING = ("gateway-metering-on", "gateway-metering-off")
LIMITS = ("gateway-limits-on", "gateway-limits-off")
MODES = {
    "full": Knobs(duration_s=5, reps=5, warmup_s=1, ttfb_count=1000, held_streams=0, load_cpus=None),
    "quick": Knobs(duration_s=2, reps=3, warmup_s=1, ttfb_count=300, held_streams=0, load_cpus=None),
    "smoke": Knobs(duration_s=1, reps=1, warmup_s=0, ttfb_count=20, held_streams=0, load_cpus=None),
}


def _ratio(m: dict[str, dict[str, float]], arm: str, base: str, metric: str) -> float:
    return m[arm][metric] / m[base][metric] if m[base][metric] else 0.0


TOGGLE_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "metering_stream_c16",
        "streaming chat (24 SSE events incl. usage), concurrency 16: streams/s with metering on vs off",
        METERING,
        _wrk(lambda a, k: chat_call(a, k, stream=True), 16),
        lambda m: [],
        ("rps", "cpu_us_per_req", "p50_ms", "p99_ms"),
    ),
    Scenario(
        "metering_ttfb_c1",
        "streaming chat, concurrency 1: time to first byte / first SSE event with metering on vs off",
        METERING,
        _ttfb(lambda a, k: chat_call(a, k, stream=True)),
        lambda m: [],
        ("first_byte_p50_ms", "first_event_p50_ms", "stream_p50_ms"),
    ),
    Scenario(
        "metering_chat_c1",
        "non-streaming chat, concurrency 1: latency (p99 above all) with metering on vs off — the "
        "records' shipping and ingestion are the only difference",
        METERING,
        _wrk(lambda a, k: chat_call(a, k), 1),
        lambda m: [],
        ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"),
    ),
    Scenario(
        "limits_chat_c64",
        "non-streaming chat, concurrency 64: requests/s with limits on vs off",
        LIMITS,
        _wrk(lambda a, k: chat_call(a, k), 64),
        lambda m: [
            Check("requests/s with limits on vs off", _ratio(m, LIMITS[0], LIMITS[1], "rps"), ">=", 0.90, "x")
        ],
        ("rps", "cpu_us_per_req", "p50_ms", "p99_ms"),
    ),
)


def derived(result: dict[str, Any]) -> str:
    """One sentence comparing the two arms' medians."""
    on, off = (result["arms"][a] for a in result["arms"])
    if result["scenario"] == "metering_chat_c1":
        on_p99, off_p99 = on["p99_ms"]["median"], off["p99_ms"]["median"]
        return (f"metering on: p99 {on_p99:.3f} ms vs {off_p99:.3f} ms off ({on_p99 - off_p99:+.3f} ms); "
                f"p50 {on['p50_ms']['median']:.3f} vs {off['p50_ms']['median']:.3f} ms")
    if result["scenario"] == "metering_ttfb_c1":
        fb = on["first_byte_p50_ms"]["median"] - off["first_byte_p50_ms"]["median"]
        ev = on["first_event_p50_ms"]["median"] - off["first_event_p50_ms"]["median"]
        return f"metering adds {fb:+.3f} ms to the median time to first byte, {ev:+.3f} ms to the first event"
    cost = 1 - on["rps"]["median"] / off["rps"]["median"]
    what = "metering" if result["scenario"].startswith("metering") else "limits"
    text = f"{what} on costs {cost:+.1%} of the throughput with it off ({on['rps']['median']:,.0f} vs " \
        f"{off['rps']['median']:,.0f}/s)"  # fmt: skip
    if on.get("cpu_us_per_req", {}).get("median") and off.get("cpu_us_per_req", {}).get("median"):
        cpu_on, cpu_off = on["cpu_us_per_req"]["median"], off["cpu_us_per_req"]["median"]
        # CPU per request is what the shared machine disturbs least: the throughput one core allows.
        text += (f"; the data plane's CPU per request is {cpu_on:,.0f} vs {cpu_off:,.0f} µs "
                 f"({cpu_on - cpu_off:+,.0f} µs, a one-core throughput ratio of {cpu_off / cpu_on:.3f}×)")  # fmt: skip
    return text


def markdown(header: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The generated section of docs/benchmarks.md."""
    m = header["machine"]
    lines = [BEGIN, "", (f"Run {header['date']} on {m['nproc']} cores ({m['cpu']}, load average {m['loadavg']} "
             f"at the start), commit {header['versions']['odock']}: `{header['command']}`. {header['reps']} "
             f"interleaved repetitions of {header['duration_s']} s per arm; {header['cores']}.")]  # fmt: skip
    if header["note"]:
        lines.append(f"\nNote: {header['note']}")
    for r in results:
        metrics = r["headline"]
        lines += ["", (f"**{r['scenario']}** — {r['description']} (other processes used "
                  f"{r['foreign_cpu_pct']:.0f}% of the machine meanwhile)"), "",
                  "| arm | " + " | ".join(metrics) + " |", "| --- |" + " --- |" * len(metrics)]  # fmt: skip
        for arm, stats in r["arms"].items():
            cells = [f"{stats[k]['median']:,.3g} ({stats[k]['min']:,.3g}–{stats[k]['max']:,.3g})" if stats[k]
                     ["median"] < 100 else f"{stats[k]['median']:,.0f} ({stats[k]['min']:,.0f}–{stats[k]['max']:,.0f})"
                     for k in metrics]  # fmt: skip
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        lines += ["", derived(r) + "."]
        for t in r["targets"]:
            lines.append(f"Target: {t['target']} {t['op']} {t['limit']} {t['unit']}: {t['value']} — "
                         + ("met" if t["met"] else "**missed**"))  # fmt: skip
    for name, error in header["failed"].items():
        lines += ["", f"**{name}** failed: {error}"]
    lines += ["", END]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    base = MODES[args.mode]
    load_cpus, dp_cpu, _, _ = core_plan()
    knobs = Knobs(duration_s=args.duration or base.duration_s, reps=args.reps or base.reps,
                  warmup_s=base.warmup_s, ttfb_count=base.ttfb_count, held_streams=0,
                  load_cpus=load_cpus)  # fmt: skip
    names = [n for n in args.scenarios.split(",") if n]
    scenarios = [s for s in TOGGLE_SCENARIOS if not names or s.name in names]
    raise_fd_limit()
    if load_cpus is not None:
        os.sched_setaffinity(0, {int(load_cpus)})
    cores_text = (f"the data planes (1 worker each) pinned to core {dp_cpu}; wrk, the streaming client, the fake "
                  f"upstream and the control plane on core {load_cpus}") if dp_cpu else "nothing pinned"  # fmt: skip
    header: dict[str, Any] = {"date": report.today(), "machine": report.machine(),
                              "versions": report.versions(wrk.wrk_path()), "reps": knobs.reps,
                              "duration_s": knobs.duration_s, "cores": cores_text, "note": args.note,
                              "command": shown_command("scripts/bench-toggles", sys.argv[1:]), "failed": {}}  # fmt: skip
    started: list[Any] = []
    results = []
    with stopping(started), tempfile.TemporaryDirectory(prefix="odock-bench-toggles-") as tmp:
        log(f"toggles: {knobs}; {cores_text}")
        upstream = start_upstream(load_cpus)
        started.append(upstream)
        cp, secrets = start_control_plane(Path(tmp) / "cp.db", load_cpus)
        started.append(cp)
        variants = {"metered": {"ODOCK_LIMITS": "off"},
                    "unmetered": {"ODOCK_LIMITS": "off", "ODOCK_USAGE_METERING": "off"},
                    "limited": {"ODOCK_LIMITS": "on"}}  # fmt: skip
        dps = {}
        for name, env in variants.items():
            dps[name] = start_data_plane(
                cp, secrets, workers=1, cpus=dp_cpu, extra_env=env, name=f"dp-{name}"
            )
            started.append(dps[name])
        org = await provision(cp.address, secrets.admin_token, upstream.url)
        for svc in dps.values():
            await wait_connected(svc)
        services = {METERING[0]: dps["metered"], METERING[1]: dps["unmetered"], LIMITS[0]: dps["limited"],
                    LIMITS[1]: dps["metered"]}  # fmt: skip
        await check_answers({f"gateway-{name}": svc for name, svc in dps.items()}, org.key)
        bench = Bench(services, org.key, Path(tmp), knobs)
        for scenario in scenarios:
            log(f"scenario {scenario.name}: {scenario.description}")
            try:
                result = await run_scenario(scenario, bench)
            except RuntimeError as exc:
                header["failed"][scenario.name] = str(exc)[:500]
                print(json.dumps({"scenario": scenario.name, "error": str(exc)[:500]}), flush=True)
                continue
            result["derived"] = derived(result)
            log(result["derived"])
            results.append(result)
            print(json.dumps(result), flush=True)
        codes = {svc.name: svc.stop() for svc in reversed(started)}
        started.clear()
    bad = {name: code for name, code in codes.items() if code != 0}
    if bad:
        log(f"processes exited uncleanly: {bad}")
        return 1
    docs = None if args.no_docs else (args.docs or (REPO_ROOT / "docs" / "benchmarks.md" if args.mode == "full"
                                                    else None))  # fmt: skip
    if docs is not None:
        report.write_block(docs, markdown(header, results), BEGIN, END)
        log(f"wrote {docs}")
    return 1 if header["failed"] else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-toggles", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="about a minute")
    mode.add_argument(
        "--smoke", action="store_const", dest="mode", const="smoke", help="seconds; 1 repetition"
    )
    parser.set_defaults(mode="full")
    parser.add_argument("--scenarios", default="", help="comma-separated subset of: "
                        + ", ".join(s.name for s in TOGGLE_SCENARIOS))  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="repetitions per arm (>= 3 for a real run)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk run")
    parser.add_argument("--docs", type=Path, default=None, help="markdown file to update (full run default: "
                        "docs/benchmarks.md)")  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="never write the markdown file")
    parser.add_argument("--note", default="", help="a remark recorded with the run (e.g. 'machine busy')")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    import uvloop

    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
