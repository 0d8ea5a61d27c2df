"""scripts/benchmark/sidebyside's arms as a user types them, and its refusals (no run: minutes)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scripts.benchmark.sidebyside import parse_args, parse_arm

REPO = Path(__file__).resolve().parents[3]


def test_an_arm_is_settings_and_or_a_tree() -> None:
    assert parse_arm("on=") == ("gateway-on", {})
    assert parse_arm("bare=ODOCK_LIMITS=off;ODOCK_USAGE_METERING=off") == (
        "gateway-bare", {"ODOCK_LIMITS": "off", "ODOCK_USAGE_METERING": "off"}
    )  # fmt: skip
    assert parse_arm(f"after=ODOCK_LOG_LEVEL=warning@{REPO}") == (
        "gateway-after", {"ODOCK_LOG_LEVEL": "warning", "PYTHONPATH": str(REPO)}
    )  # fmt: skip
    assert parse_arm(f"b_2=@{REPO}") == ("gateway-b_2", {"PYTHONPATH": str(REPO)})


@pytest.mark.parametrize(
    "text",
    ["on", "=ODOCK_LIMITS=off", "x y=", "a=LIMITS=off", "a=ODOCK_LIMITS", "a=@/nonexistent/tree"],
)
def test_a_mistyped_arm_is_refused_with_what_was_expected(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_arm(text)


def test_arms_must_have_distinct_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--arm", "a=", "--arm", "a=ODOCK_LIMITS=off"])
    assert "arm names must differ" in capsys.readouterr().err
    args = parse_args(["--arm", "a=", "--arm", "b=", "--stream", "--connections", "16"])
    assert [name for name, _ in args.arm] == ["gateway-a", "gateway-b"] and args.stream and args.connections == 16
