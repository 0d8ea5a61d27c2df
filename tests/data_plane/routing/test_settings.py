"""RoutingSettings from the environment: defaults, overrides, bounds named in one line."""

from __future__ import annotations

import pytest

from data_plane.settings import RoutingSettings, Settings, SettingsError
from tests.data_plane.test_settings import PEPPER, TOKEN

BASE = {"ODOCK_NODE_TOKEN": TOKEN, "ODOCK_KEY_PEPPER": PEPPER}


def test_defaults() -> None:
    s = Settings.from_env(BASE).routing
    assert s == RoutingSettings()
    assert (s.max_attempts, s.retry_after_max, s.cooldown_429) == (4, 300.0, 1.0)
    assert (s.breaker_failures, s.breaker_failure_rate, s.breaker_window) == (3, 0.5, 30.0)
    assert (s.breaker_min_requests, s.breaker_cooldown) == (10, 30.0)
    assert (s.idle_seconds, s.max_tracked) == (600.0, 10_000)


def test_overrides() -> None:
    s = Settings.from_env({
        **BASE, "ODOCK_ROUTING_MAX_ATTEMPTS": "20", "ODOCK_ROUTING_RETRY_AFTER_MAX": "60",
        "ODOCK_ROUTING_COOLDOWN_429": "0.5", "ODOCK_BREAKER_FAILURES": "0", "ODOCK_BREAKER_FAILURE_RATE": "1",
        "ODOCK_BREAKER_WINDOW": "10", "ODOCK_BREAKER_MIN_REQUESTS": "50", "ODOCK_BREAKER_COOLDOWN": "2.5",
    }).routing  # fmt: skip
    assert s == RoutingSettings(
        max_attempts=20, retry_after_max=60.0, cooldown_429=0.5, breaker_failures=0, breaker_failure_rate=1.0,
        breaker_window=10.0, breaker_min_requests=50, breaker_cooldown=2.5,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ODOCK_ROUTING_MAX_ATTEMPTS", "0"),
        ("ODOCK_ROUTING_MAX_ATTEMPTS", "21"),
        ("ODOCK_ROUTING_MAX_ATTEMPTS", "2.5"),
        ("ODOCK_BREAKER_FAILURE_RATE", "0"),
        ("ODOCK_BREAKER_FAILURE_RATE", "1.5"),
        ("ODOCK_BREAKER_FAILURES", "-1"),
        ("ODOCK_BREAKER_COOLDOWN", "soon"),
        ("ODOCK_ROUTING_RETRY_AFTER_MAX", "-1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name) as err:
        Settings.from_env({**BASE, name: value})
    assert "\n" not in str(err.value)
