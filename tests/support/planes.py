"""Start the control plane as a real process (``python -m control_plane``) for tests.

    cp = start_control_plane(db_url)
    ...  # gRPC on cp.address with cp.admin_token / cp.node_token
    assert cp.stop() == 0

Use the fixture from a conftest.py: ``from tests.support.planes import control_plane  # noqa: F401``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.secrets import PlaneSecrets

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass
class ControlPlaneProcess:
    """A running control-plane process and the secrets it was started with."""

    process: subprocess.Popen[bytes]
    address: str
    secrets: PlaneSecrets
    env: dict[str, str]
    workdir: Path
    stderr_path: Path
    _stderr_cache: str | None = field(repr=False, default=None)

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

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        """Everything the process wrote to stderr so far."""
        if self._stderr_cache is not None:
            return self._stderr_cache
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` and wait; returns the exit code (kills it after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                self._cleanup()
                raise AssertionError(f"control plane ignored signal {sig} for {timeout}s") from None
        self._cleanup()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, no grace."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        # Keep stderr readable after the work directory (ready file, log) is removed.
        if self._stderr_cache is None:
            self._stderr_cache = self.stderr_text()
        shutil.rmtree(self.workdir, ignore_errors=True)


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
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), str(REPO_ROOT / "proto"),
                                                    os.environ.get("PYTHONPATH", "")])),
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
    workdir = Path(tempfile.mkdtemp(prefix="odock-cp-"))
    ready = workdir / "ready.json"
    env = control_plane_env(db_url, secrets, ready, extra_env)
    stderr_path = workdir / "stderr.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "control_plane"],
            env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )  # fmt: skip
    cp = ControlPlaneProcess(proc, "", secrets, env, workdir, stderr_path)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if ready.exists():
            cp.address = json.loads(ready.read_text())["grpc"]
            return cp
        if proc.poll() is not None:
            cp.kill()  # reaps it and removes the work directory, keeping stderr
            raise RuntimeError(f"control plane exited with {proc.returncode}:\n{cp.stderr_text()[-4000:]}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    cp.kill()
    raise RuntimeError(f"control plane not ready after {timeout}s:\n{cp.stderr_text()[-4000:]}")


@pytest.fixture
def control_plane(tmp_path: Path) -> Iterator[ControlPlaneProcess]:
    """A control-plane process on a fresh SQLite file, stopped with SIGTERM afterwards."""
    cp = start_control_plane(f"sqlite:///{tmp_path / 'cp.db'}")
    try:
        yield cp
    finally:
        cp.stop()
