"""The control plane's usage settings: ingest concurrency and retention."""

from __future__ import annotations

import pytest

from control_plane.settings import Settings, SettingsError
from tests.support.secrets import PlaneSecrets


def _env(**extra: str) -> dict[str, str]:
    return {**PlaneSecrets().control_plane_env(), **extra}


def test_defaults() -> None:
    s = Settings.from_env(_env())
    assert (s.usage_ingest_concurrency, s.usage_retention_days, s.usage_rollup_retention_days) == (2, 30.0, 400.0)
    assert s.usage_prune_seconds == 600.0
    assert s.usage_ingest_cpu_priority == "normal"


def test_values_and_forever() -> None:
    s = Settings.from_env(_env(ODOCK_USAGE_INGEST_CONCURRENCY="4", ODOCK_USAGE_RETENTION_DAYS="0",
                               ODOCK_USAGE_ROLLUP_RETENTION_DAYS="0", ODOCK_USAGE_PRUNE_SECONDS="60"))  # fmt: skip
    assert (s.usage_ingest_concurrency, s.usage_retention_days, s.usage_rollup_retention_days) == (4, 0.0, 0.0)
    assert s.usage_prune_seconds == 60.0
    assert Settings.from_env(_env(ODOCK_USAGE_INGEST_CPU_PRIORITY="IDLE")).usage_ingest_cpu_priority == "idle"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ODOCK_USAGE_INGEST_CONCURRENCY": "0"}, "ODOCK_USAGE_INGEST_CONCURRENCY: must be between 1 and 64"),
        ({"ODOCK_USAGE_INGEST_CONCURRENCY": "1.5"}, "ODOCK_USAGE_INGEST_CONCURRENCY: not an integer"),
        ({"ODOCK_USAGE_RETENTION_DAYS": "-1"}, "ODOCK_USAGE_RETENTION_DAYS: must be between 0"),
        ({"ODOCK_USAGE_ROLLUP_RETENTION_DAYS": "20"}, "at least 35"),
        ({"ODOCK_USAGE_RETENTION_DAYS": "90", "ODOCK_USAGE_ROLLUP_RETENTION_DAYS": "60"}, "at least 35"),
        ({"ODOCK_USAGE_RETENTION_DAYS": "0", "ODOCK_USAGE_ROLLUP_RETENTION_DAYS": "400"}, "at least 35"),
        ({"ODOCK_USAGE_PRUNE_SECONDS": "0"}, "ODOCK_USAGE_PRUNE_SECONDS: must be between"),
        ({"ODOCK_USAGE_INGEST_CPU_PRIORITY": "low"}, "ODOCK_USAGE_INGEST_CPU_PRIORITY: must be 'normal' or 'idle'"),
    ],
)
def test_bad_values_are_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(_env(**env))
