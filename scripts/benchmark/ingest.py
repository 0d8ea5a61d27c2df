"""``scripts/bench-ingest``: the control plane's usage ingest rate (records/s) on SQLite and PostgreSQL.

A real control plane per backend (``python -m control_plane``), fed through real
``NodeService.ReportUsage`` bidi streams with the node token, exactly as data-plane nodes
ship: batches of realistic UsageRecords with unique request ids, a few batches in flight per
stream, the clock stopped at the last ack (an ack is sent only after its batch committed).
Each repetition also replays the batches it just stored (an ack lost, the node sends them
again): the duplicate path, where every record must come back as a duplicate. Backends are
interleaved per repetition; every ack's counts are checked, so a fast failure is never a result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from odock.v1 import common_pb2, node_pb2, node_pb2_grpc
from scripts.benchmark import report
from scripts.benchmark.ingestprobe import LoopProbe, process_cpu_seconds
from scripts.benchmark.pgserver import start_pg
from scripts.benchmark.stack import REPO_ROOT
from scripts.benchmark.stats import summary
from tests.support.planes import ControlPlaneProcess, start_control_plane

BEGIN = "<!-- bench:ingest:begin -->"
END = "<!-- bench:ingest:end -->"
ACK_TIMEOUT_S = 120.0
METRICS = ("records_per_s", "duplicates_per_s", "records_per_cpu_s", "duplicates_per_cpu_s",
           "idle_ping_p50_ms", "ping_p50_ms", "ping_p99_ms", "ping_max_ms")  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """How much: records per repetition, batch size, streams ("nodes"), batches in flight per stream."""

    records: int
    batch: int
    streams: int
    window: int
    reps: int
    spread_s: int = 7200  # record times over this many seconds before now
    # Records in time order with ids as the gateway makes them (time first: data_plane.usage.new_record_id),
    # as live nodes send them; else times cycling over the spread and 96-bit random ids (the old ids).
    live: bool = False
    random_ids: bool = False  # with live: 96-bit random ids as before issue 16 (the id change measured alone)


MODES = {
    "full": Plan(records=50_000, batch=500, streams=2, window=4, reps=3),
    "quick": Plan(records=10_000, batch=500, streams=2, window=4, reps=3),
    "smoke": Plan(records=400, batch=100, streams=2, window=2, reps=1),
}
_MODELS = (("gpt-4o", "gpt-4o-2024-08-06", common_pb2.PROVIDER_FAMILY_OPENAI, "/v1/chat/completions"),
           ("claude", "claude-sonnet-4-20250514", common_pb2.PROVIDER_FAMILY_ANTHROPIC, "/v1/messages"),
           ("flash", "gemini-2.5-flash", common_pb2.PROVIDER_FAMILY_GEMINI,
            "/v1beta/models/{model}:streamGenerateContent"),
           ("llama", "meta-llama/Llama-3.1-8B-Instruct", common_pb2.PROVIDER_FAMILY_VLLM,
            "/v1/vllm/chat/completions"),
           ("embed", "text-embedding-3-small", common_pb2.PROVIDER_FAMILY_OPENAI, "/v1/embeddings"))  # fmt: skip
_ORGS = tuple(f"org_{i:02d}{'x' * 20}" for i in range(8))
_KEYS = tuple(f"key_{i:03d}{'y' * 20}" for i in range(64))


def make_records(
    count: int, now_s: int, spread_s: int = 7200, live: bool = False, random_ids: bool = False
) -> list[node_pb2.UsageRecord]:
    """``count`` records like a busy gateway's: unique ids, 8 orgs, 64 keys, 5 models, last 2 hours (``spread_s``)."""
    out = []
    for i in range(count):
        at = now_s - spread_s + (i * spread_s) // count if live else now_s - (i * 7) % spread_s
        time_first = live and not random_ids
        request_id = f"req_{at:08x}{os.urandom(8).hex()}" if time_first else os.urandom(12).hex()
        name, slug, family, endpoint = _MODELS[i % len(_MODELS)]
        streamed = i % 3 != 0
        inp, outp = 200 + (i * 37) % 4000, 0 if name == "embed" else 20 + (i * 13) % 900
        rec = node_pb2.UsageRecord(
            request_id=request_id, node_id=f"bench-node-{i % 2}", org_id=_ORGS[i % len(_ORGS)],
            key_id=_KEYS[i % len(_KEYS)], model_name=name, upstream_slug=slug,
            family=family,
            endpoint=endpoint, http_status=200 if i % 50 else 429,
            outcome=common_pb2.OUTCOME_COMPLETE if i % 50 else common_pb2.OUTCOME_ERROR,
            streamed=streamed, input_tokens=inp, output_tokens=outp, cached_input_tokens=(inp // 4) * (i % 2),
            reasoning_tokens=outp // 3 if i % 7 == 0 else 0, cost_picos=inp * 2_500_000 + outp * 10_000_000,
            latency_us=300_000 + i % 5_000_000, upstream_latency_us=295_000 + i % 5_000_000,
            time_to_first_byte_us=150_000 + i % 90_000 if streamed else 0,
        )  # fmt: skip
        rec.time.FromSeconds(at)
        out.append(rec)
    return out


def make_batches(records: list[node_pb2.UsageRecord], plan: Plan) -> list[list[node_pb2.UsageBatch]]:
    """The records cut into batches, dealt round-robin to ``plan.streams`` streams (sequence per stream)."""
    lanes: list[list[node_pb2.UsageBatch]] = [[] for _ in range(plan.streams)]
    for n, start in enumerate(range(0, len(records), plan.batch)):
        lane = lanes[n % plan.streams]
        lane.append(node_pb2.UsageBatch(node_id=f"bench-node-{n % plan.streams}", sequence=len(lane) + 1,
                                        records=records[start:start + plan.batch]))  # fmt: skip
    return lanes


async def _lane(stub: node_pb2_grpc.NodeServiceStub, token: str, batches: list[node_pb2.UsageBatch],
                window: int) -> dict[str, int]:  # fmt: skip
    """One ReportUsage stream: at most ``window`` batches unacked; the summed ack counts."""
    call: grpc.aio.StreamStreamCall[node_pb2.UsageBatch, node_pb2.UsageAck] = stub.ReportUsage(  # type: ignore[call-arg,assignment]
        metadata=(("authorization", f"Bearer {token}"),)
    )
    free = asyncio.Semaphore(window)
    totals = {"accepted": 0, "duplicates": 0, "rejected": 0}

    async def writer() -> None:
        for batch in batches:
            await free.acquire()
            await call.write(batch)
        await call.done_writing()

    task = asyncio.ensure_future(writer())
    try:
        expected = [b.sequence for b in batches]
        for want in expected:
            ack = await asyncio.wait_for(call.read(), ACK_TIMEOUT_S)
            if not isinstance(ack, node_pb2.UsageAck) or ack.sequence != want:
                raise RuntimeError(f"ack out of order or missing: wanted sequence {want}, got {ack!r}")
            totals["accepted"] += ack.accepted
            totals["duplicates"] += ack.duplicates
            totals["rejected"] += ack.rejected
            free.release()
        await task
    finally:
        task.cancel()
        call.cancel()
    return totals


async def push(address: str, token: str, lanes: list[list[node_pb2.UsageBatch]], window: int) -> tuple[
        float, dict[str, int]]:  # fmt: skip
    """All lanes concurrently, one stream each; (seconds from first write to last ack, summed counts)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = node_pb2_grpc.NodeServiceStub(channel)
        await channel.channel_ready()
        start = time.perf_counter()
        results = await asyncio.gather(*(_lane(stub, token, lane, window) for lane in lanes))
        elapsed = time.perf_counter() - start
    return elapsed, {k: sum(r[k] for r in results) for k in results[0]}


async def measure(cp: ControlPlaneProcess, plan: Plan, probe_cpu: int | None = None) -> dict[str, float]:
    """One repetition on one backend: fresh records, then the same batches replayed.

    Also the control plane's CPU seconds per record stored (``process_cpu_seconds``) and its
    loop stalls while storing them (``LoopProbe``; idle first, for the RPC's own cost).
    """
    lanes = make_batches(make_records(plan.records, int(time.time()), plan.spread_s, plan.live, plan.random_ids), plan)
    probe = LoopProbe(cp.address, probe_cpu)
    probe.start()
    await asyncio.sleep(0.5)
    idle = probe.stop()
    probe.start()
    cpu0 = process_cpu_seconds(cp.pid)
    fresh_s, fresh = await push(cp.address, cp.node_token, lanes, plan.window)
    cpu1 = process_cpu_seconds(cp.pid)
    stalls = probe.stop()
    if fresh != {"accepted": plan.records, "duplicates": 0, "rejected": 0}:
        raise RuntimeError(f"fresh records not all accepted: {fresh}")
    replay_s, replay = await push(cp.address, cp.node_token, lanes, plan.window)
    cpu2 = process_cpu_seconds(cp.pid)
    if replay != {"accepted": 0, "duplicates": plan.records, "rejected": 0}:
        raise RuntimeError(f"replayed records not all duplicates: {replay}")
    return {"records_per_s": plan.records / fresh_s, "duplicates_per_s": plan.records / replay_s,
            "records_per_cpu_s": plan.records / max(cpu1 - cpu0, 1e-9),
            "duplicates_per_cpu_s": plan.records / max(cpu2 - cpu1, 1e-9),
            "idle_ping_p50_ms": idle["p50_ms"], "ping_p50_ms": stalls["p50_ms"],
            "ping_p99_ms": stalls["p99_ms"], "ping_max_ms": stalls["max_ms"]}  # fmt: skip


@dataclass
class Backend:
    """A control plane on one database."""

    name: str
    description: str
    cp: ControlPlaneProcess


def shown_command(prog: str, argv: list[str]) -> str:
    """The command line as recorded in the docs: without --docs/--note and their values."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--docs", "--note"):
            skip = True
        elif not arg.startswith(("--docs=", "--note=")):
            shown.append(arg)
    return shlex.join([prog, *shown])


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the JSON lines."""
    print(f"[bench-ingest {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _pin(pid: int, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(pid, {cpu})


@contextlib.contextmanager
def backends(
    names: list[str], workdir: Path, cp_cpu: int | None, pg_durable: bool
) -> Iterator[list[Backend]]:
    """Control planes on the named databases (sqlite, postgres), stopped and removed afterwards."""
    started: list[Backend] = []
    cleanups: list[Any] = []
    try:
        for name in names:
            if name == "sqlite":
                url, desc = f"sqlite:///{workdir / 'ingest.db'}", "SQLite file (WAL, synchronous=NORMAL)"
            else:
                server = start_pg(durable=pg_durable)
                cleanups.append(server.stop)
                url = server.create_database()
                desc = f"PostgreSQL {server.bindir.parent.name} (" + (
                    "fsync on, synchronous_commit on: the server defaults" if pg_durable
                    else "fsync off, synchronous_commit off: the test server") + ")"  # fmt: skip
            cp = start_control_plane(url)
            cleanups.append(cp.stop)
            _pin(cp.pid, cp_cpu)
            started.append(Backend(name, desc, cp))
        yield started
    finally:
        for stop in reversed(cleanups):
            with contextlib.suppress(Exception):
                stop()


def markdown(header: dict[str, Any], results: list[dict[str, Any]]) -> str:
    """The generated section of docs/benchmarks.md."""
    lines = [BEGIN, "", (f"Run {header['date']} on {header['machine']['nproc']} cores "
             f"({header['machine']['cpu']}, load average {header['machine']['loadavg']} at the start), "
             f"commit {header['commit']}: `{header['command']}`. {header['plan']}; {header['cores']}.")]  # fmt: skip
    if header["note"]:
        lines.append(f"\nNote: {header['note']}")
    lines += ["", ("| database | new records/s (median, min–max) | replayed (duplicate) records/s | "
              "new records per control-plane CPU-second | duplicates per CPU-second | "
              "health ping while ingesting p50 / p99 / max ms (idle p50) | other processes' CPU |"),
              "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip

    def cell(r: dict[str, Any], m: str) -> str:
        v = r[m]
        return f"{v['median']:,.0f} ({v['min']:,.0f}–{v['max']:,.0f})"

    for r in results:
        lines.append(f"| {r['description']} | {cell(r, 'records_per_s')} | {cell(r, 'duplicates_per_s')} | "
                     f"{cell(r, 'records_per_cpu_s')} | {cell(r, 'duplicates_per_cpu_s')} | "
                     f"{r['ping_p50_ms']['median']:.2f} / {r['ping_p99_ms']['median']:.2f} / "
                     f"{r['ping_max_ms']['max']:.2f} ({r['idle_ping_p50_ms']['median']:.2f}) | "
                     f"{r['foreign_cpu_pct']:.0f}% |")  # fmt: skip
    lines += ["", END]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    from scripts.benchmark import cpu

    plan = MODES[args.mode]
    plan = Plan(records=args.records or plan.records, batch=args.batch or plan.batch, streams=plan.streams,
                window=plan.window, reps=args.reps or plan.reps, spread_s=60 if args.recent else 7200,
                live=args.live, random_ids=args.random_ids)  # fmt: skip
    cores = sorted(os.sched_getaffinity(0))
    cp_cpu, client_cpu = (cores[-1], cores[0]) if len(cores) >= 2 else (None, None)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    cores_text = (f"control plane pinned to core {cp_cpu}, this client to core {client_cpu}, database "
                  "server unpinned" if cp_cpu is not None else "nothing pinned (1 core)")  # fmt: skip
    names = [n for n in args.databases.split(",") if n]
    header = {"date": report.today(), "machine": report.machine(), "commit": report.versions(None)["odock"],
              "command": shown_command("scripts/bench-ingest", sys.argv[1:]), "note": args.note,
              "cores": cores_text, "plan": (f"{plan.records:,} records per repetition in batches of "
              f"{plan.batch} over {plan.streams} streams ({plan.window} batches in flight each), "
              f"{plan.reps} interleaved repetitions, record times over the last {plan.spread_s} s"
              + (", in time order" if plan.live else "")
              + (" with the gateway's time-first ids" if plan.live and not plan.random_ids else ""))}  # fmt: skip
    log(header["plan"] + "; " + cores_text)
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    foreign: dict[str, float] = {n: 0.0 for n in names}
    with tempfile.TemporaryDirectory(prefix="odock-bench-ingest-") as tmp, \
            backends(names, Path(tmp), cp_cpu, not args.pg_fast) as started:  # fmt: skip
        for rep in range(plan.reps):
            order = started[rep % len(started) :] + started[: rep % len(started)]
            for b in order:
                before = cpu.snapshot()
                metrics = await measure(b.cp, plan, client_cpu)
                foreign[b.name] = max(foreign[b.name], cpu.foreign_load(before, cpu.snapshot()))
                runs[b.name].append(metrics)
                log(
                    f"rep {rep + 1}/{plan.reps} {b.name}: "
                    + ", ".join(f"{k}={v:,.0f}" for k, v in metrics.items())
                )
        descriptions = {b.name: b.description for b in started}
        codes = {b.name: b.cp.stop() for b in started}
    if any(codes.values()):
        log(f"control planes exited uncleanly: {codes}")
        return 1
    results = []
    for name in names:
        result = {"scenario": f"ingest_{name}", "description": descriptions[name], "reps": plan.reps,
                  "records": plan.records, "foreign_cpu_pct": round(foreign[name], 1),
                  **{m: summary([r[m] for r in runs[name]]) for m in METRICS}}  # fmt: skip
        results.append(result)
        print(json.dumps(result), flush=True)
    docs = None if args.no_docs else (args.docs or (REPO_ROOT / "docs" / "benchmarks.md"
                                                    if args.mode == "full" else None))  # fmt: skip
    if docs is not None:
        report.write_block(docs, markdown(header, results), BEGIN, END)
        log(f"wrote {docs}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench-ingest", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick", help="10k records per run")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="seconds; 1 run")
    parser.set_defaults(mode="full")
    parser.add_argument("--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--records", type=int, default=None, help="records per repetition")
    parser.add_argument("--batch", type=int, default=None, help="records per batch")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (>= 3 for a real run)")
    parser.add_argument("--recent", action="store_true",
                        help="record times within the last minute (live traffic) instead of the last 2 hours")  # fmt: skip
    parser.add_argument("--live", action="store_true",
                        help="records in time order with the gateway's time-first request ids, as live nodes "
                        "send them (default: times cycling over the spread, 96-bit random ids)")  # fmt: skip
    parser.add_argument("--random-ids", action="store_true",
                        help="with --live: 96-bit random request ids (the gateway's before issue 16)")
    parser.add_argument("--pg-fast", action="store_true",
                        help="PostgreSQL as the tests run it (fsync off) instead of its durable defaults")  # fmt: skip
    parser.add_argument("--docs", type=Path, default=None, help="markdown file to update (full run default: "
                        "docs/benchmarks.md)")  # fmt: skip
    parser.add_argument("--no-docs", action="store_true", help="never write the markdown file")
    parser.add_argument("--note", default="", help="a remark recorded with the run (e.g. 'machine busy')")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
