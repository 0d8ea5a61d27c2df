"""The data plane's log and metrics settings, and what a bad one does to the process."""

from __future__ import annotations

import base64
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from data_plane.logs import secret_values
from data_plane.settings import Settings, SettingsError
from odock.envconfig import LogSettings
from odock.logfmt import REDACTED, JsonFormatter
from tests.support.dataplane import data_plane_env

BASE = {"ODOCK_NODE_TOKEN": "n" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(b"p" * 32).decode()}


def test_log_settings_defaults_and_choices() -> None:
    assert LogSettings.from_env({}) == LogSettings("text", "info")
    assert LogSettings.from_env({"ODOCK_LOG_FORMAT": "JSON", "ODOCK_LOG_LEVEL": "Debug"}) == LogSettings(
        "json", "debug"
    )
    with pytest.raises(SettingsError, match="^ODOCK_LOG_FORMAT: "):
        LogSettings.from_env({"ODOCK_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="^ODOCK_LOG_LEVEL: "):
        LogSettings.from_env({"ODOCK_LOG_LEVEL": "loud"})


def test_metrics_settings(tmp_path: Path) -> None:
    plain = Settings.from_env(BASE)
    assert plain.metrics_listen is None and plain.metrics_dir is None
    on = Settings.from_env(
        {**BASE, "ODOCK_DP_METRICS_LISTEN": "0.0.0.0:9090", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    )
    assert on.metrics_listen == "0.0.0.0:9090" and on.metrics_dir == tmp_path
    with pytest.raises(SettingsError, match="^ODOCK_DP_METRICS_LISTEN: expected HOST:PORT"):
        Settings.from_env({**BASE, "ODOCK_DP_METRICS_LISTEN": "9090"})
    with pytest.raises(SettingsError, match="^PROMETHEUS_MULTIPROC_DIR: not a directory"):
        Settings.from_env({**BASE, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")})


def test_every_spelling_of_the_node_secrets_is_redacted() -> None:
    settings = Settings.from_env(BASE)
    formatter = JsonFormatter()
    formatter.add_secrets(secret_values(settings))

    for leaked in (settings.node_token, BASE["ODOCK_KEY_PEPPER"], settings.key_pepper.hex(),
                   base64.urlsafe_b64encode(settings.key_pepper).decode().rstrip("=")):  # fmt: skip
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "value %s", (leaked,), None)
        line = formatter.format(record)
        assert leaked not in line and REDACTED in line


def test_a_bad_log_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = data_plane_env("127.0.0.1:1", "n" * 40, b"p" * 32, tmp_path / "ready.json",
                         extra_env={"ODOCK_LOG_FORMAT": "yaml"})  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "data_plane"], env=env, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        "data-plane: ODOCK_LOG_FORMAT: must be 'text' or 'json'"
    ]
