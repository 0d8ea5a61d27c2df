"""Settings.from_env: defaults, overrides, one-line errors that never echo secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from data_plane.settings import Settings, SettingsError

PEPPER = base64.b64encode(b"p" * 32).decode()
TOKEN = "node-" + "t" * 40


def test_defaults_and_overrides() -> None:
    s = Settings.from_env({"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER})
    assert s.listen == "127.0.0.1:8080" and s.cp_address == "127.0.0.1:50051" and s.workers == 1
    assert s.max_body_bytes == 32 * 1024 * 1024 and s.max_staleness == 300
    assert s.timeouts.client_header == 10 and s.timeouts.upstream_idle == 60 and s.timeouts.total == 900
    assert s.key_pepper == b"p" * 32 and TOKEN not in repr(s)
    s = Settings.from_env({
        "ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER, "ODOCK_DP_LISTEN": "0.0.0.0:9000",
        "ODOCK_WORKERS": "4", "ODOCK_UPSTREAM_IDLE_SECONDS": "2.5", "ODOCK_KEY_CACHE_SIZE": "10",
    })  # fmt: skip
    assert s.host_port == ("0.0.0.0", 9000) and s.workers == 4
    assert s.timeouts.upstream_idle == 2.5 and s.cache.keys == 10


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ODOCK_KEY_PEPPER": PEPPER}, "ODOCK_NODE_TOKEN: required"),
        ({"ODOCK_NODE_TOKEN": "short", "ODOCK_KEY_PEPPER": PEPPER}, "ODOCK_NODE_TOKEN: must be at least"),
        ({"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": "c2hvcnQ="}, "ODOCK_KEY_PEPPER: must decode"),
        (
            {"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER, "ODOCK_WORKERS": "0"},
            "ODOCK_WORKERS: must be",
        ),
        (
            {"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER, "ODOCK_DP_LISTEN": "nope"},
            "ODOCK_DP_LISTEN",
        ),
        (
            {"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER, "ODOCK_UPSTREAM_IDLE_SECONDS": "soon"},
            "ODOCK_UPSTREAM_IDLE_SECONDS: not a number",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        Settings.from_env(env)
    assert "\n" not in str(err.value) and TOKEN not in str(err.value)


def test_secret_from_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    s = Settings.from_env({"ODOCK_NODE_TOKEN_FILE": str(path), "ODOCK_KEY_PEPPER": PEPPER})
    assert s.node_token == TOKEN
