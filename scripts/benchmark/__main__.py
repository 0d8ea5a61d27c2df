"""``scripts/bench`` / ``python -m scripts.benchmark``: run the scenarios, print JSON lines, write the table.

Modes: the default full run (<= 15 minutes), ``--quick`` (about 2 minutes, for development)
and ``--smoke`` (seconds per scenario, one repetition; what the test suite runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from scripts.benchmark import profile, report, wrk
from scripts.benchmark.measure import Knobs, wrk_arm
from scripts.benchmark.provision import provision
from scripts.benchmark.requests import chat_call, messages_call, routed_call, translated_call
from scripts.benchmark.scenarios import SCENARIOS, Bench, log, run_scenario, select
from scripts.benchmark.stack import (
    REPO_ROOT,
    Gateway,
    Service,
    start_control_plane,
    start_data_plane,
    start_floor,
    start_upstream,
    wait_connected,
)
from tests.support.secrets import PlaneSecrets

MODES = {
    "full": Knobs(duration_s=6, reps=3, warmup_s=1, ttfb_count=1000, held_streams=1000, load_cpus=None),
    "quick": Knobs(duration_s=1, reps=3, warmup_s=1, ttfb_count=200, held_streams=1000, load_cpus=None),
    "smoke": Knobs(duration_s=1, reps=1, warmup_s=0, ttfb_count=20, held_streams=20, load_cpus=None),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="about 2 minutes")
    mode.add_argument(
        "--smoke", action="store_const", dest="mode", const="smoke", help="seconds; 1 repetition"
    )
    parser.set_defaults(mode="full")
    parser.add_argument("--scenarios", default="", help="comma-separated subset of: "
                        + ", ".join(s.name for s in SCENARIOS))  # fmt: skip
    parser.add_argument("--reps", type=int, default=None, help="repetitions per arm (>= 3 for a real run)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per wrk run")
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="markdown file to update (default: docs/benchmarks.md for a full run, none otherwise)",
    )
    parser.add_argument("--no-docs", action="store_true", help="never write the markdown file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also sample the gateway worker with py-spy under chat and stream load",
    )
    parser.add_argument("--profile-dir", type=Path, default=None, help="keep py-spy's raw stacks here")
    parser.add_argument("--note", default="", help="a remark recorded with the run (e.g. 'machine busy')")
    parser.add_argument(
        "--deployments",
        type=int,
        default=1,
        help="deployments behind the chat model (issue 14: >1 measures routing; all point at the fake upstream)",
    )
    parser.add_argument(
        "--cp-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an ODOCK_ setting for the control plane (repeatable), e.g. ODOCK_USAGE_INGEST_CPU_PRIORITY=idle",
    )
    args = parser.parse_args(argv)
    cp_env: dict[str, str] = {}
    for item in args.cp_env:
        name, eq, value = item.partition("=")
        if not eq or not name.startswith("ODOCK_"):
            parser.error(f"--cp-env: expected ODOCK_NAME=VALUE, got {item!r}")
        cp_env[name] = value
    args.cp_env = cp_env  # given to the control plane's environment as is
    return args


def core_plan() -> tuple[str | None, str | None, str | None, str]:
    """(load cores, data-plane core, both cores, description) for this machine."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None, None, f"only {len(cores)} core available: nothing pinned"
    load, dp = str(cores[0]), str(cores[-1])
    return (
        load,
        dp,
        f"{load},{dp}",
        (
            f"data plane (1 worker) and floor pinned to core {dp}; wrk, streaming client, fake upstream and "
            f"control plane on core {load}; `--workers 2` data plane on cores {load},{dp}"
        ),
    )


def raise_fd_limit() -> None:
    """Thousands of held streams need thousands of sockets in every process (children inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def check_answers(services: dict[str, Service], key: str) -> None:
    """One request of every kind to every target: each must be a 200 with the upstream's content."""
    async with aiohttp.ClientSession() as session:
        for arm, svc in services.items():
            calls = [(chat_call(arm, key), b'"chat.completion"'),
                     (chat_call(arm, key, stream=True), b"data: [DONE]"),
                     (messages_call(arm, key), b"event: message_stop")]  # fmt: skip
            if arm == "gateway-translated":
                calls.append((translated_call(key), b'"chat.completion.chunk"'))
            if arm == "gateway-routed":
                calls.append((routed_call(key), b'"chat.completion"'))
            for call, expect in calls:
                async with session.post(
                    svc.url + call.path,
                    data=call.body,
                    headers={**call.headers, "Content-Type": "application/json"},
                ) as resp:
                    body = await resp.read()
                    if resp.status != 200 or expect not in body:
                        raise RuntimeError(f"{arm} {call.path}: HTTP {resp.status}: {body[:300]!r}")


async def ceiling(upstream: Service, workdir: Path, knobs: Knobs, other_core: str | None) -> dict[str, float]:
    """The fake upstream's own ceiling: wrk on the other core, JSON chat at 64 and SSE at 16 connections."""
    pinned = Knobs(**{**knobs.__dict__, "load_cpus": other_core})
    json_arm = wrk_arm(upstream, chat_call("direct", ""), workdir, pinned, connections=64)
    sse_arm = wrk_arm(upstream, chat_call("direct", "", stream=True), workdir, pinned, connections=16)
    return {"json_rps": (await json_arm(False))["rps"], "sse_streams_per_s": (await sse_arm(False))["rps"]}


async def run_profiles(dp: Service, bench: Bench, out_dir: Path, seconds: int) -> str:
    """py-spy on the 1-worker gateway under chat (c64), stream (c16), 1 MB body (c8) and translated
    stream (c16) load."""
    texts = []
    pid = dp.worker_pids()[0]
    loads = (
        ("chat c64", chat_call("gateway", bench.key), 64),
        ("stream c16", chat_call("gateway", bench.key, stream=True), 16),
        ("body 1MB c8", chat_call("gateway", bench.key, pad_to=1 << 20), 8),
        ("translated stream c16", translated_call(bench.key), 16),
    )
    for label, call, conns in loads:
        arm = wrk_arm(dp, call, bench.workdir, Knobs(**{**bench.knobs.__dict__, "duration_s": seconds + 2}),
                      connections=conns)  # fmt: skip
        load = asyncio.ensure_future(arm(False))
        await asyncio.sleep(1)
        summary = await profile.record(pid, seconds, out_dir / f"gateway-{label.replace(' ', '-')}.txt")
        metrics = await load
        texts.append(summary.render(f"gateway {label} ({metrics['rps']:.0f} req/s while sampled)"))
        print(
            json.dumps(
                {
                    "scenario": f"profile_{label.replace(' ', '_')}",
                    "samples": summary.samples,
                    "self": summary.self_top[:25],
                    "inclusive": summary.inclusive_top[:25],
                }
            ),
            flush=True,
        )
    return "\n\n".join(texts)


async def run_pyinstrument(
    cp: Service, secrets: PlaneSecrets, dp_cpu: str | None, bench: Bench, out_dir: Path, seconds: int
) -> str:
    """A separate 1-worker data plane under pyinstrument, driven by chat load at 64 connections."""
    out = out_dir / "pyinstrument-chat-c64.txt"
    dp = start_data_plane(cp, secrets, workers=1, cpus=dp_cpu, name="data-plane-pyinstrument",
                          launcher=profile.pyinstrument_launcher(out))  # fmt: skip
    try:
        await wait_connected(dp)
        await check_answers({"gateway": dp}, bench.key)  # sequential first requests fill the caches
        arm = wrk_arm(dp, chat_call("gateway", bench.key), bench.workdir,
                      Knobs(**{**bench.knobs.__dict__, "duration_s": seconds}), connections=64)  # fmt: skip
        await arm(True)
        metrics = await arm(False)
    finally:
        dp.stop()
    text = f"pyinstrument, gateway chat c64 ({metrics['rps']:.0f} req/s under the profiler):\n"
    return text + profile.pyinstrument_excerpt(out.read_text(errors="replace"))


@contextlib.contextmanager
def stopping(items: list[Any]) -> Iterator[None]:
    """Stop every started service (in reverse order) whatever happens."""
    try:
        yield
    finally:
        for item in reversed(items):
            with contextlib.suppress(Exception):
                item.stop()


async def main_async(args: argparse.Namespace) -> int:
    knobs = MODES[args.mode]
    load_cpus, dp_cpu, both, cores_text = core_plan()
    knobs = Knobs(duration_s=args.duration or knobs.duration_s, reps=args.reps or knobs.reps,
                  warmup_s=knobs.warmup_s, ttfb_count=knobs.ttfb_count, held_streams=knobs.held_streams,
                  load_cpus=load_cpus)  # fmt: skip
    scenarios = select([n for n in args.scenarios.split(",") if n])
    wants_2w = any("gateway-2w" in s.arms for s in scenarios)
    raise_fd_limit()
    if load_cpus is not None:
        os.sched_setaffinity(0, {int(load_cpus)})  # this process runs the streaming client
    header: dict[str, Any] = {"date": report.today(), "machine": report.machine(),
                              "versions": report.versions(wrk.wrk_path()), "mode": args.mode,
                              "reps": knobs.reps, "duration_s": knobs.duration_s, "cores": cores_text,
                              "command": "scripts/bench " + shlex.join(sys.argv[1:]), "note": args.note,
                              "deployments": args.deployments}  # fmt: skip
    started: list[Any] = []
    with stopping(started), tempfile.TemporaryDirectory(prefix="odock-bench-") as tmp:
        workdir = Path(tmp)
        log(f"mode {args.mode}: {knobs}; {cores_text}")
        upstream = start_upstream(load_cpus)
        started.append(upstream)
        floor = start_floor(upstream, dp_cpu)
        started.append(floor)
        cp, secrets = start_control_plane(workdir / "cp.db", load_cpus, args.cp_env)
        started.append(cp)
        dp = start_data_plane(cp, secrets, workers=1, cpus=dp_cpu)
        started.append(dp)
        dp2 = start_data_plane(cp, secrets, workers=2, cpus=both) if wants_2w else None
        if dp2 is not None:
            started.append(dp2)
        org = await provision(cp.address, secrets.admin_token, upstream.url, deployments=args.deployments)
        for svc in (dp, dp2):
            if svc is not None:
                await wait_connected(svc)
        # "gateway-translated": the same data plane, asked in OpenAI format for the Anthropic model.
        # "gateway-routed": the same data plane, asked for the model behind three deployments.
        services = {"direct": upstream, "floor": floor, "gateway": dp, "gateway-translated": dp, "gateway-routed": dp}
        if dp2 is not None:
            services["gateway-2w"] = dp2
        await check_answers(services, org.key)
        bench = Bench(services, org.key, workdir, knobs)
        ceil = await ceiling(upstream, workdir, knobs, dp_cpu)
        header["ceiling"] = (f"{ceil['json_rps']:,.0f} req/s (JSON chat, 64 connections), "
                             f"{ceil['sse_streams_per_s']:,.0f} streams/s (SSE chat, 16 connections)")  # fmt: skip
        print(
            json.dumps({"scenario": "upstream_ceiling", **{k: round(v, 1) for k, v in ceil.items()}}),
            flush=True,
        )
        log(f"fake upstream ceiling: {header['ceiling']}")
        results = []
        failed: dict[str, str] = {}
        header["failed"] = failed
        for scenario in scenarios:
            log(f"scenario {scenario.name}: {scenario.description}")
            try:
                result = await run_scenario(scenario, bench)
            except RuntimeError as exc:  # one broken scenario must not hide the others' figures
                log(f"scenario {scenario.name} failed: {exc}")
                failed[scenario.name] = str(exc)[:500]
                print(json.dumps({"scenario": scenario.name, "error": str(exc)[:500]}), flush=True)
                continue
            results.append(result)
            print(json.dumps(result), flush=True)
        profile_text = None
        if args.profile:
            out_dir = args.profile_dir or workdir
            out_dir.mkdir(parents=True, exist_ok=True)
            profile_text = await run_profiles(dp, bench, out_dir, max(3, knobs.duration_s))
            profile_text += "\n\n" + await run_pyinstrument(cp, secrets, dp_cpu, bench, out_dir,
                                                              max(3, knobs.duration_s))  # fmt: skip
            log("profile:\n" + profile_text)
        gateway = Gateway(cp, dp, dp2, secrets)
        started.clear()
        codes = {upstream.name: upstream.stop(), floor.name: floor.stop(), **gateway.stop()}
        bad = {name: code for name, code in codes.items() if code != 0}
        if bad:
            log(f"processes exited uncleanly: {bad}")
            return 1
    docs = None if args.no_docs else (args.docs or (REPO_ROOT / "docs" / "benchmarks.md" if args.mode == "full"
                                                    else None))  # fmt: skip
    if docs is not None:
        report.write_block(docs, report.markdown(header, results, profile_text))
        log(f"wrote {docs}")
    missed = [f"{r['scenario']}: {t['target']}" for r in results for t in r["targets"] if not t["met"]]
    log("targets missed: " + ("; ".join(missed) if missed else "none"))
    if failed:
        log(f"scenarios failed: {', '.join(failed)}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    import uvloop

    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
