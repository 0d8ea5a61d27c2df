"""odockctl apply with a model's deployments: and fallbacks: (issue 14), through a real control
plane: created (fallbacks naming models declared later in the file too), re-applied as a no-op,
changed as whole lists, a plain model left as it always was, and one-line errors before anything
changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.odockctl.runner import Ctl, assert_one_line_error

ENV = {"T_DEP_MAIN": "sk-test-dep-main-00000001", "T_DEP_SECOND": "sk-test-dep-second-000002",
       "T_DEP_PROXY": "http://ops:s3cret@9.9.9.9:3128"}  # fmt: skip
EU = "https://8.8.8.8/v1"
US = "https://8.8.4.4/v1"


def _config(org: str, gpt: dict[str, Any] | None = None, **extra_models: dict[str, Any]) -> dict[str, Any]:
    gpt = gpt if gpt is not None else {
        "deployments": [
            {"name": "eu", "base_url": EU, "credential": "main", "upstream_slug": "gpt-4.1", "weight": 9},
            {"name": "us", "base_url": US, "credential": "second", "upstream_slug": "gpt-4.1", "priority": 1,
             "timeout": "30s", "proxy_url_env": "T_DEP_PROXY"},
        ],
        "fallbacks": ["backup"],  # declared after this model
    }  # fmt: skip
    models = [
        {"name": "gpt", **gpt},
        {"name": "backup", "base_url": US, "credential": "second", "upstream_slug": "gpt-4.1-mini"},
        *({"name": n, **m} for n, m in extra_models.items()),
    ]
    return {"orgs": [{
        "name": org,
        "credentials": [{"name": "main", "family": "openai", "secret_env": "T_DEP_MAIN"},
                        {"name": "second", "family": "openai", "secret_env": "T_DEP_SECOND"}],
        "models": models,
    }]}  # fmt: skip


def _apply(ctl: Ctl, tmp_path: Path, data: dict[str, Any], *flags: str) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return ctl.ok("apply", "-f", str(path), *flags, env=ENV).lines()


def _models(ctl: Ctl, org: str) -> dict[str, Any]:
    return {m["name"]: m for m in ctl.state()[org]["models"]}


def test_apply_creates_and_reapplies_deployments_and_fallbacks(ctl: Ctl, tmp_path: Path) -> None:
    lines = _apply(ctl, tmp_path, _config("dep"))
    assert "model dep/gpt: created" in lines and "model dep/backup: created" in lines
    models = _models(ctl, "dep")
    gpt = models["gpt"]
    assert [(d["name"], d["base_url"], d["credential"], d.get("weight")) for d in gpt["deployments"]] == [
        ("eu", EU, "main", 9), ("us", US, "second", 1)
    ]  # fmt: skip
    assert gpt["deployments"][1]["proxy_url"] == "http://ops:***@9.9.9.9:3128"
    assert gpt["deployments"][1]["timeout"] == "30s" and gpt["fallbacks"] == ["backup"]
    assert [d["name"] for d in models["backup"]["deployments"]] == ["default"]
    # the same file again: nothing changes, not even an update time
    before = ctl.state()
    again = _apply(ctl, tmp_path, _config("dep"))
    assert "model dep/gpt: unchanged" in again and "model dep/backup: unchanged" in again
    assert ctl.state() == before


def test_apply_changes_deployments_and_fallbacks_as_whole_lists(ctl: Ctl, tmp_path: Path) -> None:
    _apply(ctl, tmp_path, _config("dep2"))
    data = _config("dep2")
    data["orgs"][0]["models"][0]["deployments"][0]["weight"] = 4
    before = ctl.state()
    planned = _apply(ctl, tmp_path, data, "--dry-run")
    assert "model dep2/gpt: changed (deployments)" in planned and ctl.state() == before
    assert "model dep2/gpt: changed (deployments)" in _apply(ctl, tmp_path, data)
    assert [d.get("weight") for d in _models(ctl, "dep2")["gpt"]["deployments"]] == [4, 1]

    data["orgs"][0]["models"][0]["fallbacks"] = []
    assert "model dep2/gpt: changed (fallbacks)" in _apply(ctl, tmp_path, data)
    assert "fallbacks" not in _models(ctl, "dep2")["gpt"]
    # a file without deployments: makes the model one plain deployment again
    plain = {"base_url": EU, "credential": "main", "upstream_slug": "gpt-4.1"}
    assert "model dep2/gpt: changed (deployments)" in _apply(ctl, tmp_path, _config("dep2", plain))
    (only,) = _models(ctl, "dep2")["gpt"]["deployments"]
    assert (only["name"], only["base_url"], only["credential"]) == ("default", EU, "main")
    assert "model dep2/gpt: unchanged" in _apply(ctl, tmp_path, _config("dep2", plain))


def test_fallbacks_between_models_created_by_the_same_file(ctl: Ctl, tmp_path: Path) -> None:
    plain = {"base_url": EU, "credential": "main", "upstream_slug": "gpt-4.1", "fallbacks": ["zeta"]}
    zeta = {"base_url": US, "credential": "second", "fallbacks": ["gpt"]}
    lines = _apply(ctl, tmp_path, _config("dep3", plain, zeta=zeta))
    assert "model dep3/zeta: created" in lines
    models = _models(ctl, "dep3")
    assert models["gpt"]["fallbacks"] == ["zeta"] and models["zeta"]["fallbacks"] == ["gpt"]
    assert "model dep3/zeta: unchanged" in _apply(ctl, tmp_path, _config("dep3", plain, zeta=zeta))


@pytest.mark.parametrize(
    ("gpt", "needle"),
    [
        ({"base_url": EU, "deployments": [{"base_url": EU, "credential": "main"}]}, "give it in each deployment"),
        ({"deployments": []}, "at least one deployment"),
        ({"deployments": [{"base_url": EU}]}, "deployments[0].credential: required"),
        ({"deployments": [{"base_url": EU, "credential": "ghost"}]}, "not declared"),
        ({"deployments": [{"base_url": EU, "credential": "main", "colour": "red"}]}, "unknown field"),
        ({"deployments": [{"base_url": EU, "credential": "main", "name": "a"},
                          {"base_url": US, "credential": "main", "name": "a"}]}, "duplicate deployment name"),
        ({"deployments": [{"base_url": EU, "credential": "main", "weight": 1001}]}, "weight must be at most 1000"),
        ({"deployments": [{"base_url": EU, "credential": "main", "proxy_url": "https://p:1"}]}, "https proxies"),
        ({"deployments": [{"base_url": EU, "credential": "main", "proxy_url_env": "T_DEP_NOPE"}]}, "T_DEP_NOPE"),
        ({"deployments": [{"base_url": "https://api.openai.com", "credential": "main"}]}, "/v1"),
        ({"base_url": EU, "credential": "main", "fallbacks": ["ghost"]}, "fallbacks[0]: model 'ghost'"),
        ({"base_url": EU, "credential": "main", "fallbacks": ["gpt"]}, "its own fallback"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_errors_before_anything_changes(
    ctl: Ctl, tmp_path: Path, gpt: dict[str, Any], needle: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(_config("dep-bad", gpt), sort_keys=False))
    before = ctl.state()
    assert_one_line_error(ctl.run("apply", "-f", str(path), env=ENV), 2, needle)
    assert ctl.state() == before
    assert "s3cret" not in str(before)
