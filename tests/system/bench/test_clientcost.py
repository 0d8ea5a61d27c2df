"""The client cost micro-benchmark runs (smoke: a few hundred requests), so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

from scripts.benchmark.stack import REPO_ROOT, python_env


def test_clientcost_prints_one_line_per_client_and_mode() -> None:
    argv = [sys.executable, "-m", "scripts.benchmark.clientcost", "--requests", "256", "--concurrency", "8",
            "--rounds", "1"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO_ROOT, env=python_env(), capture_output=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert {(line["client"], line["mode"]) for line in lines} == {
        (client, mode) for client in ("aiohttp", "lean") for mode in ("sequential", "concurrent")
    }
    assert all(line["cpu_us_per_req"] > 0 and line["rps"] > 0 for line in lines)
