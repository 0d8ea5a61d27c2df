"""The data plane's usage settings: defaults, parsing and one-line errors."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from data_plane.settings import Settings, SettingsError

BASE = {"ODOCK_NODE_TOKEN": "n" * 40, "ODOCK_KEY_PEPPER": base64.b64encode(os.urandom(32)).decode()}


def test_usage_defaults_and_overrides() -> None:
    usage = Settings.from_env(BASE).usage
    assert (usage.spool_dir, usage.spool_full_policy, usage.batch_size, usage.batch_age) == (
        Path("odock-usage-spool"),
        "drop_newest",
        500,
        1.0,
    )
    usage = Settings.from_env(
        {
            **BASE,
            "ODOCK_USAGE_SPOOL_DIR": "/var/spool/odock",
            "ODOCK_USAGE_SPOOL_MAX_BYTES": "65536",
            "ODOCK_USAGE_SPOOL_FULL_POLICY": "drop_oldest",
            "ODOCK_USAGE_BATCH_SIZE": "50",
            "ODOCK_USAGE_BATCH_AGE_SECONDS": "0.2",
        }
    ).usage
    assert (
        usage.spool_dir,
        usage.spool_max_bytes,
        usage.spool_full_policy,
        usage.batch_size,
        usage.batch_age,
    ) == (Path("/var/spool/odock"), 65536, "drop_oldest", 50, 0.2)


def test_durability_and_memory_settings() -> None:
    usage = Settings.from_env(BASE).usage
    assert (usage.commit_interval, usage.memory_max) == (0.05, 50_000)
    usage = Settings.from_env(
        {**BASE, "ODOCK_USAGE_COMMIT_SECONDS": "0.01", "ODOCK_USAGE_MEMORY_MAX_RECORDS": "1000"}
    ).usage
    assert (usage.commit_interval, usage.memory_max) == (0.01, 1000)
    with pytest.raises(SettingsError, match="ODOCK_USAGE_COMMIT_SECONDS: must be between"):
        Settings.from_env({**BASE, "ODOCK_USAGE_COMMIT_SECONDS": "0"})


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "ODOCK_USAGE_SPOOL_FULL_POLICY",
            "drop_all",
            "ODOCK_USAGE_SPOOL_FULL_POLICY: must be one of drop_newest, drop_oldest",
        ),
        ("ODOCK_USAGE_SPOOL_MAX_BYTES", "10", "ODOCK_USAGE_SPOOL_MAX_BYTES: must be between"),
        ("ODOCK_USAGE_BATCH_SIZE", "many", "ODOCK_USAGE_BATCH_SIZE: not an integer"),
    ],
)
def test_bad_usage_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, name: value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
