"""``scripts/bench-ingest --smoke`` and ``scripts/bench-toggles --smoke`` end to end, so they cannot rot.

They start real control planes (SQLite and PostgreSQL) and data planes, so they are marked
slow; they check the output's shape and the generated doc sections, never the figures.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from scripts.benchmark.ingest import BEGIN as INGEST_BEGIN
from scripts.benchmark.toggles import BEGIN as TOGGLES_BEGIN
from scripts.benchmark.toggles import TOGGLE_SCENARIOS

REPO = Path(__file__).resolve().parents[3]
INTRO = "# Benchmarks\n\nhand-written intro\n"


def _run(script: str, docs: Path) -> list[dict[str, Any]]:
    docs.write_text(INTRO)
    proc = subprocess.run([str(REPO / "scripts" / script), "--smoke", "--docs", str(docs)],
                          capture_output=True, text=True, timeout=280, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "odk-" not in proc.stdout + proc.stderr + docs.read_text()  # no virtual key in any output
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _positive(stat: dict[str, float]) -> bool:
    return stat["min"] <= stat["median"] <= stat["max"] and stat["median"] > 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_ingest_smoke_reports_both_databases(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    by_name = {line["scenario"]: line for line in _run("bench-ingest", docs)}
    assert set(by_name) == {"ingest_sqlite", "ingest_postgres"}
    for result in by_name.values():
        assert _positive(result["records_per_s"]) and _positive(result["duplicates_per_s"])
    text = docs.read_text()
    assert text.startswith(INTRO) and INGEST_BEGIN in text and "scripts/bench-ingest --smoke" in text
    assert "PostgreSQL" in text and "SQLite" in text


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_toggles_smoke_reports_every_scenario(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    by_name = {line["scenario"]: line for line in _run("bench-toggles", docs)}
    assert set(by_name) == {s.name for s in TOGGLE_SCENARIOS}
    for scenario in TOGGLE_SCENARIOS:
        result = by_name[scenario.name]
        assert list(result["arms"]) == list(scenario.arms) and result["derived"]
        for arm in result["arms"].values():
            assert all(_positive(arm[metric]) for metric in scenario.headline)
    assert [t["target"] for t in by_name["limits_chat_c64"]["targets"]] == [
        "requests/s with limits on vs off"
    ]
    text = docs.read_text()
    assert text.startswith(INTRO) and TOGGLES_BEGIN in text and "scripts/bench-toggles --smoke" in text
