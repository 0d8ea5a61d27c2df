"""Sampling the data-plane worker with py-spy under load, and summarising where its time goes.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``); the summary
gives, per function (line numbers dropped), its share of the samples as the innermost frame
(self) and anywhere on the stack (inclusive).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")
# Stacks of the main thread (the event loop) start here; py-spy counts some waits of other
# threads (gRPC's poller, the loop's executor) as busy, so those are reported apart.
_MAIN_ROOT = "_run_module_as_main ("
# Frames every stack passes through (entry point, event loop): left out of the inclusive list.
_ROOT_FILES = ("(<frozen runpy>)", "(data_plane/__main__.py)", "(uvloop/__init__.py)", "(asyncio/runners.py)")
# Layers, by the innermost frame's file (first match wins). uvloop is compiled, so time in its C
# code (epoll, socket reads and writes, callback dispatch) shows as the Python frame that
# entered it: the loop's run call.
AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("usage metering (data_plane/usage)", ("data_plane/usage/",)),
    ("gateway code (data_plane, other)", ("data_plane/",)),
    ("aiohttp server (web_*)", ("aiohttp/web_",)),
    ("aiohttp client (client*, connector)", ("aiohttp/client", "aiohttp/connector")),
    ("aiohttp wire (http_*, streams, helpers)", ("aiohttp/",)),
    ("event loop C code (uvloop run)", ("uvloop/", "asyncio/runners.py")),
    ("asyncio (tasks, timeouts, futures)", ("asyncio/",)),
    ("multidict / yarl", ("multidict/", "yarl/")),
    ("grpc (control-plane client)", ("grpc/", "grpc_")),
)


@dataclass(frozen=True)
class ProfileSummary:
    """Top frames of one recording."""

    samples: int  # event-loop (main thread) samples: the shares below are of these
    other_threads: int  # samples of other threads (gRPC poller, executor), left out of the shares
    self_top: list[tuple[str, float]]  # (function, percent of samples)
    inclusive_top: list[tuple[str, float]]
    areas: list[tuple[str, float]]  # self time grouped by layer (see AREAS)

    def render(self, title: str, limit: int = 20) -> str:
        """A plain-text block for reports."""
        lines = [
            f"{title}: {self.samples} event-loop samples (+{self.other_threads} in other threads, not counted)",
            "  self%  layer (innermost frame's file)",
        ]
        lines += [f"  {pct:5.1f}  {name}" for name, pct in self.areas]
        lines += ["  self%  function (innermost frame)"]
        lines += [f"  {pct:5.1f}  {name}" for name, pct in self.self_top[:limit]]
        lines += ["  incl%  function (anywhere on the stack)"]
        lines += [f"  {pct:5.1f}  {name}" for name, pct in self.inclusive_top[:limit]]
        return "\n".join(lines)


def _frame(raw: str) -> str:
    name = _LINE_NO.sub(")", raw.strip())
    return name.replace(str(Path(sys.prefix)), "<venv>")


def summarise(collapsed: str, top: int = 40) -> ProfileSummary:
    """Self and inclusive shares per function from collapsed stacks."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = others = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";") if f.strip()]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        if not any(f.startswith(_MAIN_ROOT) for f in frames):
            others += count
            continue
        total += count
        own[frames[-1]] += count
        areas[area(frames[-1])] += count
        for name in set(frames):
            if not name.endswith(_ROOT_FILES):
                incl[name] += count

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / total) for name, n in counter.most_common(top)] if total else []

    return ProfileSummary(total, others, pct(own), pct(incl), pct(areas))


def area(frame: str) -> str:
    """The layer a frame belongs to."""
    where = frame.rsplit("(", 1)[-1]
    for name, prefixes in AREAS:
        if any(p in where for p in prefixes):
            return name
    return "other"


def py_spy() -> str:
    """The py-spy binary of this environment (scripts/bench installs the bench extra when missing)."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("py-spy not found: pip install -e '.[bench]'")
    return found


async def record(pid: int, duration_s: int, out: Path, rate: int = 250) -> ProfileSummary:
    """Sample ``pid`` for ``duration_s``; the raw stacks are kept in ``out``.

    Non-blocking mode (py-spy reads the process's memory while it runs). Blocking mode, which
    stops the process for each sample, gives complete stacks but overweights system calls: on the
    VM of issue 16's session 15 it put a quarter of the samples on lines calling
    ``asyncio.get_running_loop()`` (a ``getpid`` system call, 86 ns in ``timeit``, and no cost when
    removed). An occasional torn stack costs less than that bias (docs/benchmarks.md).
    """
    cmd = [py_spy(), "record", "--pid", str(pid), "--duration", str(duration_s), "--rate", str(rate),
           "--nonblocking", "--format", "raw", "--output", str(out)]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), duration_s + 60)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-800:]}")
    return summarise(out.read_text(errors="replace"))


def pyinstrument_launcher(out: Path, interval_s: float = 0.0005) -> list[str]:
    """Arguments that run a module under pyinstrument, writing its text report to ``out`` at exit."""
    return ["-m", "pyinstrument", "--renderer", "text", "--no-color", "--interval", str(interval_s),
            "--outfile", str(out)]  # fmt: skip


def pyinstrument_excerpt(report: str, lines: int = 70) -> str:
    """The top of a pyinstrument text report (its header and the heaviest branches)."""
    return "\n".join(report.splitlines()[:lines])
