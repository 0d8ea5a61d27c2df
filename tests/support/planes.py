"""Start the control plane as a real process (``python -m control_plane``) for tests.

    cp = start_control_plane(db_url)
    ...  # gRPC on cp.address with cp.admin_token / cp.node_token
    assert cp.stop() == 0

Use the fixture from a conftest.py: ``from tests.support.planes import control_plane  # noqa: F401``.
The process joins the session's process group (``tests/support/spawn.py``), so it dies with pytest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.secrets import PlaneSecrets
from tests.support.spawn import READY_FILE, REPO_ROOT, PlaneProcess, launch, new_workdir, python_path

__all__ = ["REPO_ROOT", "ControlPlaneProcess", "control_plane", "control_plane_env", "start_control_plane"]

START_TIMEOUT_S = 30.0
LOOPBACK_EGRESS = "127.0.0.0/8,::1"
STOP_TIMEOUT_S = 20.0


@dataclass
class ControlPlaneProcess(PlaneProcess):
    """A running control-plane process and the secrets it was started with."""

    NAME = "control plane"

    address: str = ""
    secrets: PlaneSecrets = field(default_factory=PlaneSecrets)

    @property
    def admin_token(self) -> str:
        return self.secrets.admin_token

    @property
    def node_token(self) -> str:
        return self.secrets.node_token

    @property
    def pepper(self) -> bytes:
        return self.secrets.pepper

    @property
    def keks(self) -> dict[str, bytes]:
        return self.secrets.keks


def control_plane_env(
    db_url: str, secrets: PlaneSecrets, ready_file: Path, extra_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The full environment for a control-plane process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
    env.update(secrets.control_plane_env())
    env.update({
        "ODOCK_CP_LISTEN": "127.0.0.1:0",
        "ODOCK_DATABASE_URL": db_url,
        "ODOCK_READY_FILE": str(ready_file),
        "ODOCK_GRACE_SECONDS": "2",
        "ODOCK_HEARTBEAT_SECONDS": "1",
        # The fake upstreams listen on loopback, which the egress policy refuses by default.
        "ODOCK_EGRESS_ALLOW": LOOPBACK_EGRESS,
        "PYTHONPATH": python_path(),
    })  # fmt: skip
    env.update(extra_env or {})
    return env


def start_control_plane(
    db_url: str,
    *,
    extra_env: Mapping[str, str] | None = None,
    secrets: PlaneSecrets | None = None,
    timeout: float = START_TIMEOUT_S,
) -> ControlPlaneProcess:
    """Launch ``python -m control_plane`` on 127.0.0.1:0 and wait until it is serving."""
    secrets = secrets or PlaneSecrets()
    workdir = new_workdir("odock-cp-")
    env = control_plane_env(db_url, secrets, workdir / READY_FILE, extra_env)
    cp, ready = launch(ControlPlaneProcess, [sys.executable, "-m", "control_plane"], env, workdir,
                       timeout=timeout, secrets=secrets)  # fmt: skip
    cp.address = str(ready["grpc"])
    return cp


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    """A control-plane process on a fresh SQLite file, stopped with SIGTERM afterwards."""
    cp = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}")
    try:
        yield cp
    finally:
        cp.stop()
