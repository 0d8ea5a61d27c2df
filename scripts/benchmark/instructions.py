"""``scripts/bench-instructions``: instructions per request under callgrind, a figure this host cannot blur.

CPU time per request on this 2-core VM moves by 10–30 % between runs of the same code (the
hypervisor's neighbours), so a change worth a few per cent cannot be seen in ``scripts/bench``
without many repetitions. ``valgrind --tool=callgrind`` counts the instructions a process executes
(all its threads, user space): the same code serving the same requests gives the same count to
about 0.1 %, whatever else the machine does. It is not time (a system call, a cache miss, a
branch mispredicted count as nothing, or one), so it complements CPU time, never replaces it:
a regex scanning a block runs at several instructions a cycle, interpreter dispatch at about one.

Each arm is one process (the floor, or a 1-worker data plane with its settings and, optionally,
another source tree) started under callgrind beside a control plane and the fast fake upstream
(run normally). After a warm-up, for each repetition: the counters are zeroed
(``callgrind_control -z``), ``--requests`` requests are sent at ``--concurrency`` by an aiohttp
client, and the counters dumped (``-d``): instructions over requests.

Run: ``scripts/bench-instructions [--scenario chat|stream|messages|translated] [--arms floor,gateway]
[--tree before=/path/to/worktree] [--requests 2000] [--concurrency 64] [--reps 2]``. A few minutes
an arm (callgrind runs the process about 50 times slower). Prints one JSON line per arm.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from scripts.benchmark import stack
from scripts.benchmark.__main__ import core_plan, raise_fd_limit, stopping
from scripts.benchmark.provision import provision
from scripts.benchmark.requests import Call, chat_call, messages_call, translated_call
from scripts.benchmark.stack import Service, spawn, start_control_plane, start_upstream, wait_connected

# Data-plane settings per arm name (every other setting as scripts/bench runs it).
ARMS: dict[str, dict[str, str]] = {
    "gateway": {},
    "unlimited": {"ODOCK_LIMITS": "off"},
    "unmetered": {"ODOCK_LIMITS": "off", "ODOCK_USAGE_METERING": "off"},
    "unlogged": {"ODOCK_LOG_LEVEL": "warning"},
}
# name: (default concurrency, the call for an arm: "floor" or "gateway")
SCENARIOS: dict[str, tuple[int, Callable[[str, str], Call]]] = {
    "chat": (64, lambda target, key: chat_call(target, key)),
    "stream": (16, lambda target, key: chat_call(target, key, stream=True)),
    # issue 16's translated target: an Anthropic model streamed through OpenAI chat completions
    # against the same model streamed natively through /v1/messages (no floor arm for "translated").
    "messages": (16, lambda target, key: messages_call(target, key)),
    "translated": (16, lambda target, key: translated_call(key)),
}
# Starting a process under callgrind takes about a minute here (imports run 50 times slower).
START_TIMEOUT_S = 900.0


def _callgrind(out: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--collect-atstart=yes", f"--callgrind-out-file={out}"]


def _start(
    arm: str, tree: str, cp: Service, secrets: Any, upstream: Service, cpus: str | None, work: Path
) -> Service:
    from tests.support.dataplane import data_plane_env

    out = work / f"callgrind-{arm}.out"
    if arm == "floor":
        argv = [*_callgrind(out), sys.executable, "-m", "scripts.benchmark.floor", "--upstream", upstream.url,
                "--port", "0"]  # fmt: skip
        return spawn(arm, argv, stack.python_env(), cpus=cpus, ready_arg=True)
    settings = ARMS[arm.split("@")[0]]
    env = data_plane_env(cp.address, secrets.node_token, secrets.pepper, Path("/nonexistent"),
                         extra_env={**stack.DP_ENV, "ODOCK_GRACE_SECONDS": "2", **settings})  # fmt: skip
    env.pop("ODOCK_READY_FILE")
    if tree:
        env["PYTHONPATH"] = tree
    argv = [*_callgrind(out), sys.executable, "-m", "data_plane", "--workers", "1"]
    return spawn(arm, argv, env, cpus=cpus, ready_env="ODOCK_READY_FILE")


async def _send(url: str, call: Call, count: int, concurrency: int) -> None:
    headers = {**call.headers, "Content-Type": "application/json"}
    todo = iter(range(count))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in todo:
                async with session.post(url + call.path, data=call.body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{url}{call.path}: {resp.status}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def _totals(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def _zero(service: Service) -> None:
    subprocess.run(["callgrind_control", "-z", str(service.process.pid)], check=True, capture_output=True)


def _dump(service: Service, work: Path, arm: str) -> int:
    """Dump the arm's counters; the instructions since the last zeroing (the newest dump file)."""
    before = set(glob.glob(str(work / f"callgrind-{arm}.out.*")))
    subprocess.run(["callgrind_control", "-d", str(service.process.pid)], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(glob.glob(str(work / f"callgrind-{arm}.out.*"))) - before
        if new:
            time.sleep(0.5)  # written by the time callgrind_control returns; let the file settle
            return _totals(Path(max(new, key=os.path.getmtime)))
        time.sleep(0.2)
    raise RuntimeError(f"{arm}: callgrind wrote no dump")


async def main_async(args: argparse.Namespace) -> int:
    default_concurrency, make_call = SCENARIOS[args.scenario]
    concurrency = args.concurrency or default_concurrency
    load_cpus, dp_cpu, _, _ = core_plan()
    raise_fd_limit()
    if load_cpus is not None:
        os.sched_setaffinity(0, {int(load_cpus)})
    arms = [(a, "") for a in args.arms.split(",") if a]
    for spec in args.tree:
        name, _, path = spec.partition("=")
        arms.append((f"gateway@{name}", str(Path(path).resolve())))
    stack.START_TIMEOUT_S = START_TIMEOUT_S
    started: list[Service] = []
    with stopping(started), tempfile.TemporaryDirectory(prefix="odock-bench-instructions-") as tmp:
        work = Path(tmp)
        upstream = start_upstream(load_cpus)
        started.append(upstream)
        cp, secrets = start_control_plane(work / "cp.db", load_cpus)
        started.append(cp)
        services = {}
        for arm, tree in arms:
            services[arm] = _start(arm, tree, cp, secrets, upstream, dp_cpu, work)
            started.append(services[arm])
        org = await provision(cp.address, secrets.admin_token, upstream.url)
        for arm, service in services.items():
            if arm != "floor":
                await wait_connected(service, START_TIMEOUT_S)
        calls = {arm: make_call("floor" if arm == "floor" else "gateway", org.key) for arm in services}
        for arm, service in services.items():
            await _send(service.url, calls[arm], args.warmup, concurrency)
        per_request: dict[str, list[float]] = {arm: [] for arm in services}
        for _ in range(args.reps):
            for arm, service in services.items():
                _zero(service)  # blocking on purpose: nothing else runs meanwhile
                await _send(service.url, calls[arm], args.requests, concurrency)
                per_request[arm].append(_dump(service, work, arm) / args.requests)
        for arm, values in per_request.items():
            print(json.dumps({"scenario": args.scenario, "arm": arm, "concurrency": concurrency,
                              "requests": args.requests, "instructions_per_request": round(statistics.median(values)),
                              "reps": [round(v) for v in values]}), flush=True)  # fmt: skip
        for service in reversed(started):
            service.stop()
        started.clear()
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="chat")
    parser.add_argument("--arms", default="floor,gateway", help=f"comma-separated: floor, {', '.join(ARMS)}")
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="also a full gateway arm running the data plane of another source tree (a git worktree)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=2000, help="per repetition and arm")
    parser.add_argument("--warmup", type=int, default=300, help="requests per arm before counting")
    parser.add_argument("--concurrency", type=int, default=0, help="default: 64 for chat, 16 for stream")
    parser.add_argument("--reps", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    unknown = [a for a in args.arms.split(",") if a and a != "floor" and a not in ARMS]
    bad_trees = [t for t in args.tree if "=" not in t or not Path(t.partition("=")[2]).is_dir()]
    if args.scenario == "translated" and "floor" in args.arms.split(","):
        unknown.append("floor (no floor translates)")
    if unknown or bad_trees:
        print(f"bench-instructions: unknown arm(s) {unknown} (known: floor, {', '.join(ARMS)}) or --tree not "
              f"NAME=DIRECTORY: {bad_trees}", file=sys.stderr)  # fmt: skip
        return 2
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"bench-instructions: {tool} is required (apt-get install valgrind)", file=sys.stderr)
            return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
