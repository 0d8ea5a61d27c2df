"""deploy/prometheus/odock-alerts.yaml: valid for Prometheus (promtool), alerts that fire when
they should (promtool's rule unit tests), and only metrics the planes really export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from control_plane.metrics import ControlPlaneMetrics
from data_plane.metrics import DataPlaneMetrics
from tests.system.deploy.envcheck import DEPLOY

RULES = DEPLOY / "prometheus" / "odock-alerts.yaml"
UNIT_TESTS = Path(__file__).with_name("alerts_test.yaml")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup --test installs Debian's prometheus package"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


class _Feed:
    """A change feed as the control plane's metrics read it (its gauges exist only once one is watched)."""

    latest_revision = 7
    subscriber_count = 1
    last_read: float | None = 0.0


def _exported() -> set[str]:
    names: set[str] = set()
    cp = ControlPlaneMetrics()
    cp.watch_feed(_Feed())
    for registry in (cp.registry, DataPlaneMetrics().registry):
        for family in registry.collect():
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def _expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_when_they_should() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_an_alert_reads_is_exported() -> None:
    exported = _exported()
    used = {m for expr in _expressions() for m in re.findall(r"\bodock_(?:cp|dp)_[a-z_]+", expr)}
    assert used, "no odock metric in the rules"
    assert used <= exported, sorted(used - exported)


@pytest.mark.parametrize("needle", ["runbook", "summary"])
def test_every_alert_says_what_it_means_and_where_to_look(needle: str) -> None:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert needle in rule["annotations"], rule["alert"]
        if needle == "runbook":
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            text = (DEPLOY.parent / page).read_text(encoding="utf-8")
            headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in
                        re.findall(r"^#+ (.+)$", text, re.MULTILINE)}  # fmt: skip
            assert anchor in headings, (rule["alert"], anchor)
