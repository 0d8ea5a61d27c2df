"""odockctl apply with a model's registry fields (issue 13): created, planned and changed like
the other fields (--dry-run shows the paths and changes nothing), defaults when absent, and
one-line errors for bad values before anything changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.odockctl.runner import Ctl, assert_one_line_error

SECRET = {"T_REG_KEY": "sk-ant-test-registry-7777"}


def _config(org: str, **claude: Any) -> dict[str, Any]:
    model = {"name": "claude", "upstream_slug": "claude-sonnet-4-5", "credential": "anthropic",
             "base_url": "https://api.anthropic.com", **claude}  # fmt: skip
    return {"orgs": [{
        "name": org,
        "credentials": [{"name": "anthropic", "family": "anthropic", "secret_env": "T_REG_KEY"}],
        "models": [model],
    }]}  # fmt: skip


def _apply(ctl: Ctl, tmp_path: Path, data: dict[str, Any], *flags: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return ctl.ok("apply", "-f", str(path), *flags, env=SECRET).lines()


def _model(ctl: Ctl, org: str) -> dict[str, Any]:
    (model,) = ctl.state()[org]["models"]
    return model  # type: ignore[no-any-return]


def test_apply_creates_plans_and_changes_the_registry(ctl: Ctl, tmp_path: Path) -> None:
    fields = {"openai_compatible": True, "context_window": 200_000, "max_output_tokens": 8192,
              "capabilities": ["vision", "tools"]}  # fmt: skip
    assert "model reg/claude: created" in _apply(ctl, tmp_path, _config("reg", **fields))
    model = _model(ctl, "reg")
    assert model["openai_compatible"] is True
    assert (model["context_window"], model["max_output_tokens"]) == ("200000", "8192")
    assert model["capabilities"] == {"tools": True, "vision": True}
    assert "model reg/claude: unchanged" in _apply(ctl, tmp_path, _config("reg", **fields))

    changed = {**fields, "context_window": 1_000_000, "capabilities": ["tools", "streaming", "json_output"]}
    before = ctl.state()
    planned = _apply(ctl, tmp_path, _config("reg", **changed), "--dry-run")
    assert "model reg/claude: changed (context_window, capabilities)" in planned
    assert ctl.state() == before
    assert "model reg/claude: changed (context_window, capabilities)" in _apply(
        ctl, tmp_path, _config("reg", **changed)
    )
    model = _model(ctl, "reg")
    assert model["context_window"] == "1000000" and model["max_output_tokens"] == "8192"
    assert model["capabilities"] == {"tools": True, "json_output": True, "streaming": True}

    # absent from the file: the defaults, as for every other field
    reset = _apply(ctl, tmp_path, _config("reg"))
    assert (
        "model reg/claude: changed (openai_compatible, context_window, max_output_tokens, capabilities)"
        in reset
    )
    model = _model(ctl, "reg")
    assert model["openai_compatible"] is False and model["capabilities"] == {}
    assert "context_window" not in model and "max_output_tokens" not in model


@pytest.mark.parametrize(
    ("fields", "where", "says"),
    [
        ({"openai_compatible": "yes"}, "openai_compatible", "expected"),
        ({"context_window": -1}, "context_window", "out of range"),
        ({"context_window": 100_000_001}, "context_window", "at most 100000000"),
        ({"context_window": "big"}, "context_window", "not a whole number"),
        ({"context_window": True}, "context_window", "whole number"),
        ({"max_output_tokens": 10_000_001}, "max_output_tokens", "at most 10000000"),
        ({"capabilities": ["tools", "telepathy"]}, "capabilities", "telepathy"),
        ({"capabilities": "tools"}, "capabilities", "expected a list"),
    ],
)
def test_bad_values_are_one_line_errors(
    ctl: Ctl, tmp_path: Path, fields: dict[str, Any], where: str, says: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config("reg-bad", **fields), sort_keys=False))
    before = ctl.state()
    result = ctl.run("apply", "-f", str(path), env=SECRET)
    assert_one_line_error(result, 2, "gateway.yaml", f"orgs[0].models[0].{where}", says)
    assert ctl.state() == before
