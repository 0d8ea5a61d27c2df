"""odockctl apply refuses configuration mistakes with the fix: base URLs against the family's
convention (caught by --dry-run, before anything changes), internal upstream addresses and
gateway keys as provider secrets (refused by the control plane, one line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from odock import keyformat
from tests.odockctl.runner import Ctl, assert_one_line_error

SECRET = {"T_KEY": "sk-test-provider-key-0123"}


def _file(tmp_path: Path, org: str, family: str, base_url: str) -> Path:
    doc: dict[str, Any] = {
        "version": 1,
        "orgs": [{
            "name": org,
            "credentials": [{"name": "main", "family": family, "secret_env": "T_KEY"}],
            "models": [{"name": "m", "credential": "main", "base_url": base_url}],
        }],
    }  # fmt: skip
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def test_base_url_conventions_are_checked_before_anything_changes(ctl: Ctl, tmp_path: Path) -> None:
    cases = {
        ("anthropic", "https://api.anthropic.com/v1"): "an anthropic base URL is the server root"
        " (the SDK path includes /v1); drop the trailing /v1",
        ("gemini", "https://generativelanguage.googleapis.com/v1beta/"): "drop the trailing /v1beta",
        (
            "openai",
            "https://api.openai.com",
        ): "the OpenAI API's base URL is https://api.openai.com/v1 (add /v1)",
    }
    for i, ((family, url), says) in enumerate(cases.items()):
        path = _file(tmp_path, f"conv{i}", family, url)
        for dry in (["--dry-run"], []):
            result = ctl.run("apply", "-f", str(path), *dry, env=SECRET)
            assert_one_line_error(result, 2, "gateway.yaml", "orgs[0].models[0].base_url", says)
        assert f"conv{i}" not in {o["name"] for o in ctl.state()["orgs"]}  # nothing was created
    ok = _file(tmp_path, "conv-ok", "vllm", "http://vllm.example.com:8000/v1")  # vLLM tolerates /v1
    ctl.ok("apply", "-f", str(ok), env=SECRET)


def test_internal_upstreams_and_gateway_keys_are_refused_by_the_control_plane(
    ctl: Ctl, tmp_path: Path
) -> None:
    metadata = _file(tmp_path, "egress", "openai", "http://169.254.169.254/v1")
    result = ctl.run("apply", "-f", str(metadata), env=SECRET)
    assert_one_line_error(
        result,
        1,
        "INVALID_ARGUMENT: model.base_url: 169.254.169.254 is a link-local address",
        "ODOCK_EGRESS_ALLOW",
    )
    gateway_key = keyformat.generate()
    looped = _file(tmp_path, "loop", "openai", "https://api.openai.com/v1")
    result = ctl.run("apply", "-f", str(looped), env={"T_KEY": gateway_key})
    line = assert_one_line_error(result, 1, "INVALID_ARGUMENT: secret: is an Odock key")
    assert gateway_key not in line and gateway_key not in result.out
