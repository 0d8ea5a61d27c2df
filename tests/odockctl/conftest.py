"""odockctl tests: the CLI as a subprocess against a real control-plane process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.control_plane.usage.env import env  # noqa: F401  (test_usage_cmd.py)
from tests.odockctl.runner import Ctl
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.postgres import db_url, migrated_db_url, pg_server  # noqa: F401


@pytest.fixture(scope="module")
def module_cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    """One SQLite control plane per test module (tests use distinct org names)."""
    cp = start_control_plane(f"sqlite:///{tmp_path_factory.mktemp('cp') / 'cp.db'}")
    try:
        yield cp
    finally:
        assert cp.stop() == 0, cp.stderr_text()[-2000:]


@pytest.fixture
def ctl(module_cp: ControlPlaneProcess) -> Ctl:
    """odockctl pointed at the module's control plane with the super-admin token."""
    return Ctl(module_cp.address, module_cp.admin_token)


@pytest.fixture
def fresh_ctl(db_url: str) -> Iterator[Ctl]:  # noqa: F811
    """odockctl pointed at a control plane of its own, on SQLite and on PostgreSQL."""
    cp = start_control_plane(db_url)
    try:
        yield Ctl(cp.address, cp.admin_token)
    finally:
        assert cp.stop() == 0, cp.stderr_text()[-2000:]


@pytest.fixture
def example_file() -> Path:
    """The shipped example configuration."""
    return Path(__file__).resolve().parents[2] / "deploy" / "examples" / "gateway.yaml"
