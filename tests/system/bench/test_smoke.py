"""``scripts/bench --smoke`` runs every scenario end to end (one short repetition) so the benchmark cannot rot.

It starts the real control plane and data planes, so it is marked slow; it asserts the
output's shape and that every target was evaluated, never the figures themselves.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from scripts.benchmark.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nhand-written intro\n")
    proc = subprocess.run([str(REPO / "scripts" / "bench"), "--smoke", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=380, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    by_name = {line["scenario"]: line for line in lines}
    assert (
        by_name["upstream_ceiling"]["json_rps"] > 0 and by_name["upstream_ceiling"]["sse_streams_per_s"] > 0
    )
    for scenario in SCENARIOS:
        result = by_name[scenario.name]
        assert set(result["arms"]) == set(scenario.arms)
        for arm in result["arms"].values():
            for metric in scenario.headline:
                stat = arm[metric]
                assert stat["min"] <= stat["median"] <= stat["max"] and stat["median"] > 0
        for target in result["targets"]:
            assert isinstance(target["met"], bool) and target["unit"]
    # 9, and issue 16's translated stream and routed model
    assert sum(len(r["targets"]) for r in lines if "targets" in r) == 11
    text = docs.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written intro\n")
    assert "### Targets (issue 6)" in text and "scripts/bench --smoke" in text
    assert "odk-" not in proc.stdout + proc.stderr + text  # the virtual key never leaks into output
