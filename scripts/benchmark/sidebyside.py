"""Data planes side by side: CPU per request of a change against unchanged twins (issue 16).

Several 1-worker data planes, each an *arm*: settings (``ODOCK_*=value``) and/or another source
tree (a git worktree, through ``PYTHONPATH``), behind one control plane and the fast fake upstream,
all pinned to the data-plane core and measured in rotating order (``scenarios.run_scenario``), with
the floor beside them unless ``--no-floor``. Give the unchanged code two arms: their difference is
the noise of the run, which a change has to beat (on this host a single arm's CPU per request moves
10-30 % from run to run, two arms in one run agree within about 1 %).

Run, for example::

    git worktree add /tmp/before HEAD~1
    python -m scripts.benchmark.sidebyside --arm a=@/tmp/before --arm b=@/tmp/before --arm after=@. \\
        --stream --connections 16 --reps 8
    python -m scripts.benchmark.sidebyside --arm on= --arm "bare=ODOCK_LIMITS=off;ODOCK_USAGE_METERING=off"

Prints one JSON line per arm: CPU µs per request (median, min, max), requests/s and p99 (medians).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from scripts.benchmark.__main__ import core_plan, raise_fd_limit, stopping
from scripts.benchmark.measure import Knobs
from scripts.benchmark.provision import provision
from scripts.benchmark.requests import chat_call
from scripts.benchmark.scenarios import Bench, Scenario, _wrk, run_scenario
from scripts.benchmark.stack import (
    Service,
    start_control_plane,
    start_data_plane,
    start_floor,
    start_upstream,
    wait_connected,
)


def parse_arm(text: str) -> tuple[str, dict[str, str]]:
    """``name=SETTING=value;SETTING=value@tree`` → (``gateway-name``, the data plane's extra env)."""
    name, eq, rest = text.partition("=")
    if not eq or not name or not name.replace("-", "").replace("_", "").isalnum():
        raise argparse.ArgumentTypeError(f"an arm is name=settings[@tree], got {text!r}")
    settings, _, tree = rest.partition("@")
    env: dict[str, str] = {}
    for item in filter(None, settings.split(";")):
        key, eq, value = item.partition("=")
        if not eq or not key.startswith("ODOCK_"):
            raise argparse.ArgumentTypeError(f"a setting is ODOCK_NAME=value, got {item!r} in {text!r}")
        env[key] = value
    if tree:
        path = Path(tree).resolve()
        if not (path / "data_plane" / "__main__.py").is_file():
            raise argparse.ArgumentTypeError(f"{tree!r} holds no data_plane/ (a worktree of this repository?)")
        env["PYTHONPATH"] = str(path)
    return f"gateway-{name}", env


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.benchmark.sidebyside", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--arm", action="append", type=parse_arm, required=True,
                        help="name=ODOCK_X=v;ODOCK_Y=w@/path/to/tree (repeatable; settings and tree optional)")  # fmt: skip
    parser.add_argument("--stream", action="store_true", help="streamed chat (default: JSON chat)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--no-floor", action="store_true", help="leave the bare aiohttp proxy out")
    args = parser.parse_args(argv)
    names = [name for name, _ in args.arm]
    if len(set(names)) != len(names):
        parser.error("arm names must differ")
    return args


async def run(args: argparse.Namespace) -> None:
    load, core, _, _ = core_plan()
    knobs = Knobs(duration_s=args.duration, reps=args.reps, warmup_s=1, ttfb_count=0, held_streams=0,
                  load_cpus=load)  # fmt: skip
    raise_fd_limit()
    if load is not None:
        os.sched_setaffinity(0, {int(c) for c in load.split(",")})  # this process off the measured core
    started: list[Service] = []
    with stopping(started), tempfile.TemporaryDirectory() as tmp:
        upstream = start_upstream(load)
        started.append(upstream)
        cp, secrets = start_control_plane(Path(tmp) / "cp.db", load)
        started.append(cp)
        services: dict[str, Service] = {}
        if not args.no_floor:
            services["floor"] = start_floor(upstream, core)
            started.append(services["floor"])
        for name, env in args.arm:
            services[name] = start_data_plane(cp, secrets, workers=1, cpus=core, extra_env=env, name=name)
            started.append(services[name])
        org = await provision(cp.address, secrets.admin_token, upstream.url)
        for name, service in services.items():
            if name != "floor":
                await wait_connected(service)
        bench = Bench(services, org.key, Path(tmp), knobs)
        call = _wrk(lambda arm, key: chat_call(arm, key, stream=args.stream), args.connections)
        scenario = Scenario("sidebyside", "data planes side by side", tuple(services), call, lambda m: [],
                            ("rps", "cpu_us_per_req"))  # fmt: skip
        result = await run_scenario(scenario, bench)
        for arm, stats in result["arms"].items():
            cpu = stats["cpu_us_per_req"]
            print(json.dumps({"arm": arm, "cpu_us_per_req": cpu["median"], "min": cpu["min"], "max": cpu["max"],
                              "rps": stats["rps"]["median"], "p99_ms": stats["p99_ms"]["median"],
                              "foreign_cpu_pct": result.get("foreign_cpu_pct")}), flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if len(os.sched_getaffinity(0)) < 2:
        print("sidebyside: needs two cores (one for the data planes, one for the rest)", file=sys.stderr)
        return 2
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
