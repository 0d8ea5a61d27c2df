"""Running ``wrk`` (Debian's) with a Lua script for POST bodies, and reading its figures back.

The script's ``done`` hook prints one ``BENCHJSON {...}`` line (latency in microseconds from
wrk's own histogram), so nothing is scraped from the human-readable report.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MARK = "BENCHJSON "
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


def lua_string(value: str) -> str:
    """A Lua long-bracket-free, escaped string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_script(path: Path, body_file: Path, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script POSTing the bytes of ``body_file`` with ``headers``; returns ``path``."""
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open({lua_string(str(body_file))}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + _DONE)
    path.chmod(0o600)  # it may carry a virtual key
    return path


@dataclass(frozen=True)
class WrkResult:
    """One wrk run."""

    requests: int
    duration_s: float
    errors: int  # connect/read/write/timeout errors
    non_2xx: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0


def parse(output: str) -> WrkResult:
    """The figures from wrk's stdout (the ``done`` hook's line)."""
    for line in output.splitlines():
        if line.startswith(MARK):
            d = json.loads(line[len(MARK) :])
            return WrkResult(
                requests=d["requests"], duration_s=d["duration_us"] / 1e6,
                errors=d["connect"] + d["read"] + d["write"] + d["timeout"], non_2xx=d["status"],
                p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000,
                max_ms=d["max_us"] / 1000, mean_ms=d["mean_us"] / 1000,
            )  # fmt: skip
    raise RuntimeError(f"wrk printed no result line:\n{output[-2000:]}")


def wrk_path() -> str:
    """The wrk binary (scripts/bench installs it when missing)."""
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError(
            "wrk not found: run scripts/bench (it installs the Debian package) or apt-get install wrk"
        )
    return found


async def run(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: int,
    threads: int = 1,
    cpus: str | None = None,
    timeout_s: int = 10,
) -> WrkResult:
    """Run wrk against ``url`` (pinned to ``cpus`` with taskset when given)."""
    cmd = [wrk_path(), f"-t{threads}", f"-c{max(connections, threads)}", f"-d{duration_s}s",
           f"--timeout={timeout_s}s", "-s", str(script), url]  # fmt: skip
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), duration_s + timeout_s + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    return parse(out.decode(errors="replace"))
