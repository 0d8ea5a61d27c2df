"""odockctl apply and revoked keys: a file can say ``revoked: true``, and a key revoked
elsewhere is reported without failing the rest of the file."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.odockctl.apply.test_apply import actions, write
from tests.odockctl.runner import Ctl, assert_one_line_error

SECRET = {"T_REVOKE_KEY": "sk-test-revoke-aaaa-1111"}


def config(org: str, **web: Any) -> dict[str, Any]:
    """One org, one model, two keys; ``web`` overrides the first key's fields."""
    return {
        "orgs": [
            {
                "name": org,
                "credentials": [{"name": "openai", "family": "openai", "secret_env": "T_REVOKE_KEY"}],
                "models": [{"name": "gpt", "credential": "openai", "base_url": "https://api.openai.com/v1"}],
                "keys": [{"name": "web", "models": ["gpt"], **web}, {"name": "batch", "all_models": True}],
            }
        ]
    }


def _org() -> str:
    return "rv-" + os.urandom(4).hex()


def _key_state(ctl: Ctl, org: str, name: str) -> dict[str, Any]:
    keys = ctl.json("key", "list", org, "--include-revoked", "--json")["keys"]
    return next(k for k in keys if k["name"] == name)


def test_a_file_can_revoke_a_key_once(ctl: Ctl, tmp_path: Path) -> None:
    ctl = Ctl(ctl.address, ctl.token, dict(SECRET))
    org = _org()
    ctl.ok("apply", "-f", str(write(tmp_path, config(org))))
    path = write(tmp_path, config(org, revoked=True))

    planned = actions(ctl.ok("apply", "-f", str(path), "--dry-run").lines())
    assert planned[f"key {org}/web"] == "revoked"
    assert _key_state(ctl, org, "web").get("revoked") is not True  # the dry run changed nothing

    applied = actions(ctl.ok("apply", "-f", str(path)).lines())
    assert applied[f"key {org}/web"] == "revoked" and applied[f"key {org}/batch"] == "unchanged"
    assert _key_state(ctl, org, "web")["revoked"] is True

    again = ctl.json("apply", "-f", str(path), "--json")
    assert {r["name"]: r["action"] for r in again["resources"]}[f"{org}/web"] == "unchanged"


def test_a_revoked_key_needs_no_scope_and_is_never_created(ctl: Ctl, tmp_path: Path) -> None:
    ctl = Ctl(ctl.address, ctl.token, dict(SECRET))
    org = _org()
    data = config(org)
    data["orgs"][0]["keys"][0] = {"name": "web", "revoked": True}
    out = ctl.ok("apply", "-f", str(write(tmp_path, data)))
    assert actions(out.lines())[f"key {org}/web"].startswith("skipped")
    assert "odk-" not in out.out.replace("secret: odk-", "")  # only batch's secret is printed
    assert [k["name"] for k in ctl.json("key", "list", org, "--include-revoked", "--json")["keys"]] == ["batch"]


def test_a_key_revoked_elsewhere_is_reported_and_the_rest_applied(ctl: Ctl, tmp_path: Path) -> None:
    ctl = Ctl(ctl.address, ctl.token, dict(SECRET))
    org = _org()
    path = write(tmp_path, config(org))
    ctl.ok("apply", "-f", str(path))
    ctl.ok("key", "revoke", org, "web")

    data = config(org)
    data["orgs"][0]["keys"][1]["labels"] = {"team": "data"}  # a change elsewhere in the same file
    result = ctl.ok("apply", "-f", str(write(tmp_path, data)))
    lines = actions(result.lines())
    assert lines[f"key {org}/web"].startswith("revoked elsewhere: left revoked"), lines
    assert lines[f"key {org}/batch"] == "changed (labels)"
    assert _key_state(ctl, org, "batch")["labels"] == {"team": "data"}
    assert _key_state(ctl, org, "web")["revoked"] is True


def test_revoked_must_be_a_boolean(ctl: Ctl, tmp_path: Path) -> None:
    org = _org()
    result = Ctl(ctl.address, ctl.token, dict(SECRET)).run(
        "apply", "-f", str(write(tmp_path, config(org, revoked="yes")))
    )
    assert_one_line_error(result, 2, "orgs[0].keys[0].revoked")


def test_key_list_shows_an_expired_key_as_expired(ctl: Ctl) -> None:
    org = _org()
    ctl.ok("org", "create", org)
    ctl.ok("key", "create", org, "--name", "old", "--all-models", "--expires-in", "1s")
    ctl.ok("key", "create", org, "--name", "new", "--all-models", "--expires-in", "1h")
    time.sleep(1.5)  # the control plane refuses an expiry in the past: let this one pass
    rows = {line.split()[0]: line.split()[-1] for line in ctl.ok("key", "list", org).lines()[1:]}
    assert rows == {"old": "expired", "new": "active"}
    ctl.ok("key", "revoke", org, "old")
    rows = {line.split()[0]: line.split()[-1] for line in ctl.ok("key", "list", org, "--include-revoked").lines()[1:]}
    assert rows == {"old": "revoked", "new": "active"}  # revoked says more than expired
