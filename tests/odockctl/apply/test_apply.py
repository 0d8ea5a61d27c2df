"""odockctl apply: creates, is idempotent, changes exactly what differs, --dry-run changes nothing."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.odockctl.runner import Ctl, assert_one_line_error

SECRETS = {
    "T_OPENAI_KEY": "sk-test-openai-aaaa-1111",
    "T_ANTHROPIC_KEY": "sk-ant-test-bbbb-2222",
    "T_GEMINI_KEY": "AIza-test-cccc-3333",
    "T_VLLM_KEY": "vllm-test-dddd-4444",
}


def config() -> dict[str, Any]:
    """Two orgs, four families, keys of both scopes."""
    return {
        "version": 1,
        "orgs": [
            {
                "name": "acme",
                "tier": "standard",
                "limits": {"requests_per_minute": 600, "monthly_spend_cap": "250.50"},
                "outage_policy": "fail_closed",
                "default_models": {"/v1/embeddings": "embed"},
                "labels": {"team": "platform"},
                "credentials": [
                    {"name": "openai", "family": "openai", "secret_env": "T_OPENAI_KEY"},
                    {"name": "anthropic", "family": "anthropic", "secret_env": "T_ANTHROPIC_KEY"},
                    {"name": "gemini", "family": "gemini", "secret_env": "T_GEMINI_KEY"},
                    {"name": "vllm", "family": "vllm", "secret_env": "T_VLLM_KEY", "rotate": "never"},
                ],
                "models": [
                    {"name": "gpt", "upstream_slug": "gpt-4.1-mini", "credential": "openai",
                     "base_url": "https://api.openai.com/v1",
                     "pricing": {"input": "0.40", "output": "1.60", "cached_input": "0.10"}},
                    {"name": "embed", "credential": "openai", "base_url": "https://api.openai.com/v1"},
                    {"name": "claude", "upstream_slug": "claude-sonnet-4-5", "credential": "anthropic",
                     "base_url": "https://api.anthropic.com", "timeout": "2m"},
                    {"name": "gemini-flash", "upstream_slug": "gemini-2.5-flash", "credential": "gemini",
                     "base_url": "https://generativelanguage.googleapis.com"},
                    {"name": "llama", "upstream_slug": "meta-llama/Llama-3.1-8B-Instruct", "credential": "vllm",
                     "base_url": "http://vllm:8000", "enabled": False},
                ],
                "keys": [
                    {"name": "web", "models": ["gpt", "claude"], "expires": "2030-01-01T00:00:00Z",
                     "limits": {"requests_per_minute": 60, "budget": "25"}, "labels": {"app": "web"}},
                    {"name": "batch", "all_models": True},
                ],
            },
            {"name": "beta", "credentials": [], "models": [], "keys": []},
        ],
    }  # fmt: skip


def write(tmp_path: Path, data: dict[str, Any], name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def actions(lines: list[str]) -> dict[str, str]:
    """``{"model acme/gpt": "changed (pricing)"}`` from apply's resource lines."""
    out = {}
    for line in lines:
        if line.startswith(("  secret: ", "dry run:")):
            continue
        resource, _, action = line.partition(": ")
        out[resource] = action
    return out


ALL_RESOURCES = {
    "org acme", "credential acme/openai", "credential acme/anthropic", "credential acme/gemini",
    "credential acme/vllm", "model acme/gpt", "model acme/embed", "model acme/claude", "model acme/gemini-flash",
    "model acme/llama", "key acme/web", "key acme/batch", "org beta",
}  # fmt: skip


def test_apply_creates_then_changes_nothing(fresh_ctl: Ctl, tmp_path: Path) -> None:
    ctl = Ctl(fresh_ctl.address, fresh_ctl.token, dict(SECRETS))
    path = write(tmp_path, config())
    empty = ctl.state()

    planned = ctl.ok("apply", "-f", str(path), "--dry-run").lines()
    assert actions(planned) == dict.fromkeys(ALL_RESOURCES, "created")
    assert planned[-1] == "dry run: nothing was changed" and not any("odk-" in line for line in planned)
    assert ctl.state() == empty

    first = ctl.ok("apply", "-f", str(path))
    assert actions(first.lines()) == dict.fromkeys(ALL_RESOURCES, "created")
    assert sum(1 for line in first.lines() if line.startswith("  secret: odk-")) == 2
    state = ctl.state()
    acme = next(o for o in state["orgs"] if o["name"] == "acme")
    assert acme["tier"] == "standard" and acme["outage_policy"] == "OUTAGE_POLICY_FAIL_CLOSED"
    assert acme["limits"] == {"requests_per_minute": "600", "monthly_spend_cap_micros": "250500000"}
    assert acme["default_models"] == {"/v1/embeddings": "embed"} and acme["labels"] == {"team": "platform"}
    models = {m["name"]: m for m in state["acme"]["models"]}
    assert models["gpt"]["pricing"] == {
        "input_per_mtok_micros": "400000",
        "output_per_mtok_micros": "1600000",
        "cached_input_per_mtok_micros": "100000",
    }
    assert models["embed"]["upstream_slug"] == "embed" and models["claude"]["timeout"] == "120s"
    assert models["llama"]["enabled"] is False and models["llama"]["family"] == "PROVIDER_FAMILY_VLLM"
    keys = {k["name"]: k for k in state["acme"]["keys"]}
    assert sorted(keys["web"]["models"]) == ["claude", "gpt"] and keys["batch"]["all_models"] is True
    assert keys["web"]["limits"] == {"requests_per_minute": "60", "budget_micros": "25000000"}
    assert keys["web"]["expire_time"] == "2030-01-01T00:00:00Z"
    assert {c["last4"] for c in state["acme"]["credentials"]} == {"1111", "2222", "3333", "4444"}

    second = ctl.ok("apply", "-f", str(path))
    assert actions(second.lines()) == dict.fromkeys(ALL_RESOURCES, "unchanged")
    assert len(second.lines()) == len(ALL_RESOURCES)
    assert ctl.state() == state  # not even an update_time moved

    as_json = ctl.json("apply", "-f", str(path))
    assert as_json["dry_run"] is False and {r["action"] for r in as_json["resources"]} == {"unchanged"}


def test_apply_changes_exactly_what_differs(fresh_ctl: Ctl, tmp_path: Path) -> None:
    ctl = Ctl(fresh_ctl.address, fresh_ctl.token, dict(SECRETS))
    ctl.ok("apply", "-f", str(write(tmp_path, config())))
    before = ctl.state()

    data = config()
    acme = data["orgs"][0]
    acme["labels"]["team"] = "infra"
    del acme["limits"]["requests_per_minute"]
    acme["models"][0]["pricing"]["output"] = "2.00"
    acme["models"][2]["base_url"] = "https://anthropic.internal:8443"
    acme["keys"][0]["limits"]["budget"] = "30"
    acme["keys"][0]["models"] = ["gpt"]
    changed_secrets = {**SECRETS, "T_OPENAI_KEY": "sk-test-openai-new-5555", "T_VLLM_KEY": "vllm-new-6666"}
    ctl = Ctl(ctl.address, ctl.token, changed_secrets)
    path = write(tmp_path, data)
    expected = dict.fromkeys(ALL_RESOURCES, "unchanged") | {
        "org acme": "changed (limits.requests_per_minute, labels)",
        "credential acme/openai": "changed (secret)",  # vllm has rotate: never
        "model acme/gpt": "changed (pricing)",
        "model acme/claude": "changed (base_url)",
        "key acme/web": "changed (scope, limits)",
    }
    assert actions(ctl.ok("apply", "-f", str(path), "--dry-run").lines()) == expected
    assert ctl.state() == before

    assert actions(ctl.ok("apply", "-f", str(path)).lines()) == expected
    after = ctl.state()
    diff = _differences(before, after)
    assert diff == {
        "org acme": {"labels", "limits", "effective_limits", "update_time"},
        "credential acme/openai": {"last4", "rotate_time"},
        "model acme/gpt": {"pricing", "update_time"},
        # the one deployment repeats the model's base URL (issue 14)
        "model acme/claude": {"base_url", "deployments", "update_time"},
        "key acme/web": {"models", "limits", "update_time"},
    }
    assert actions(ctl.ok("apply", "-f", str(path)).lines()) == dict.fromkeys(ALL_RESOURCES, "unchanged")


def _differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, set[str]]:
    """Per resource, the names of the fields whose values differ."""

    def index(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {f"org {o['name']}": o for o in state["orgs"]}
        for org in state["orgs"]:
            for kind, key in (("credential", "credentials"), ("model", "models"), ("key", "keys")):
                out.update({f"{kind} {org['name']}/{r['name']}": r for r in state[org["name"]][key]})
        return out

    a, b = index(before), index(after)
    assert a.keys() == b.keys()
    diffs = {
        name: {f for f in a[name].keys() | b[name].keys() if a[name].get(f) != b[name].get(f)} for name in a
    }
    return {name: fields for name, fields in diffs.items() if fields}


def test_keys_out_file_and_example(ctl: Ctl, tmp_path: Path, example_file: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-example-openai-0001", "ANTHROPIC_API_KEY": "sk-example-anthropic-0002",
           "GEMINI_API_KEY": "AIza-example-gemini-0003", "VLLM_API_KEY": "none"}  # fmt: skip
    keys_out = tmp_path / "keys.jsonl"
    first = ctl.ok("apply", "-f", str(example_file), "--keys-out", str(keys_out), env=env)
    assert "odk-" not in first.out
    assert "key acme/web-app: created (secret appended to" in first.out
    assert stat.S_IMODE(os.stat(keys_out).st_mode) == 0o600
    saved = [json.loads(line) for line in keys_out.read_text().splitlines()]
    assert [(k["org"], k["name"]) for k in saved] == [("acme", "web-app"), ("acme", "batch-jobs")]
    assert all(k["secret"].startswith("odk-") and k["id"].startswith("key_") for k in saved)
    again = ctl.ok("apply", "-f", str(example_file), "--keys-out", str(keys_out), env=env)
    assert set(actions(again.lines()).values()) == {"unchanged"}
    assert [json.loads(line) for line in keys_out.read_text().splitlines()] == saved


def test_credential_rotate_policy_always(ctl: Ctl, tmp_path: Path) -> None:
    data = {"orgs": [{"name": "rot", "credentials": [
        {"name": "c", "family": "openai", "secret_env": "K", "rotate": "always"}]}]}  # fmt: skip
    path = write(tmp_path, data)
    assert (
        "credential rot/c: created" in ctl.ok("apply", "-f", str(path), env={"K": "sk-rotate-always-1"}).out
    )
    assert (
        "credential rot/c: changed (secret)"
        in ctl.ok("apply", "-f", str(path), env={"K": "sk-rotate-always-1"}).out
    )


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda d: d["orgs"][0]["models"][0].update(timeoutt="5s"), ["orgs[0].models[0].timeoutt", "unknown field"]),
        (lambda d: d.update(extra=1), ["extra: unknown field"]),
        (lambda d: d["orgs"][0]["credentials"][1].update(secret_env="T_MISSING"),
         ["orgs[0].credentials[1].secret_env", "T_MISSING"]),
        (lambda d: d["orgs"][0]["models"][2].update(base_url="ftp://api.anthropic.com"),
         ["orgs[0].models[2].base_url", "scheme"]),
        (lambda d: d["orgs"][0]["models"][2].update(base_url="https://x/v1?key=1"), ["base_url", "query"]),
        (lambda d: d["orgs"][0]["credentials"][2].update(family="cohere"),
         ["orgs[0].credentials[2].family", "cohere"]),
        (lambda d: d["orgs"][0]["models"][1].update(credential="azure"),
         ["orgs[0].models[1].credential", "azure", "not declared"]),
        (lambda d: d["orgs"][0]["keys"][0].update(models=["nope"]), ["orgs[0].keys[0].models[0]", "nope"]),
        (lambda d: d["orgs"][0]["limits"].update(requests_per_minute="lots"),
         ["orgs[0].limits.requests_per_minute"]),
        (lambda d: d["orgs"][0].update(labels=["a"]), ["orgs[0].labels", "expected a mapping"]),
        (lambda d: d["orgs"][0]["models"][0]["pricing"].update(input="0.0000001"), ["pricing.input", "6 decimal"]),
        (lambda d: d["orgs"][1].update(name="Bad Name"), ["orgs[1].name"]),
        (lambda d: d["orgs"][0].update(tier="gold"), ["orgs[0].tier", "gold"]),
        (lambda d: d["orgs"].append({"name": d["orgs"][0]["name"]}), ["orgs[2].name", "duplicate"]),
    ],
)  # fmt: skip
def test_bad_files_change_nothing(ctl: Ctl, tmp_path: Path, mutate: Any, needles: list[str]) -> None:
    data = config()
    data["orgs"][0]["name"] = data["orgs"][1]["name"] = "bad-" + os.urandom(4).hex()
    data["orgs"][1]["name"] += "-2"
    mutate(data)
    before = ctl.state()
    result = Ctl(ctl.address, ctl.token, dict(SECRETS)).run("apply", "-f", str(write(tmp_path, data)))
    assert_one_line_error(result, 2, "gateway.yaml", *needles)
    assert result.out == ""
    assert ctl.state() == before
