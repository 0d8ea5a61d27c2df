"""Start the data plane as a real process (``python -m data_plane``) for tests.

dp = start_data_plane(cp.address, cp.node_token, cp.pepper)
...  # HTTP on dp.url
assert dp.stop() == 0
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass
class DataPlaneProcess:
    """A running data-plane process (a supervisor when workers > 1)."""

    process: subprocess.Popen[bytes]
    url: str
    env: dict[str, str]
    workdir: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        """Everything the process wrote to stderr so far."""
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def status(self) -> dict[str, object]:
        """The /readyz status object (whatever the HTTP status)."""
        data: dict[str, object] = httpx.get(f"{self.url}/readyz", timeout=5).json()
        return data

    def wait_connected(self, timeout: float = 15.0) -> dict[str, object]:
        """Block until /readyz says the node is connected to the control plane."""
        deadline = time.monotonic() + timeout
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if status.get("control_plane") == "connected":
                return status
            time.sleep(0.05)
        raise AssertionError(f"data plane never connected: {status}\n{self.stderr_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig`` and wait; returns the exit code (kills it after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                raise AssertionError(f"data plane ignored signal {sig} for {timeout}s") from None
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL, no grace."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def data_plane_env(
    cp_address: str,
    node_token: str,
    pepper: bytes,
    ready_file: Path,
    *,
    listen: str = "127.0.0.1:0",
    extra_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The full environment for a data-plane process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
    env.update({
        "ODOCK_DP_LISTEN": listen,
        "ODOCK_CP_ADDRESS": cp_address,
        "ODOCK_NODE_TOKEN": node_token,
        "ODOCK_KEY_PEPPER": base64.b64encode(pepper).decode("ascii"),
        "ODOCK_READY_FILE": str(ready_file),
        "ODOCK_GRACE_SECONDS": "2",
        "ODOCK_RECONNECT_MAX_SECONDS": "0.5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), str(REPO_ROOT / "proto"),
                                                    os.environ.get("PYTHONPATH", "")])),
    })  # fmt: skip
    env.update(extra_env or {})
    return env


def start_data_plane(
    cp_address: str,
    node_token: str,
    pepper: bytes,
    *,
    extra_env: Mapping[str, str] | None = None,
    workers: int = 1,
    listen: str = "127.0.0.1:0",
    timeout: float = START_TIMEOUT_S,
) -> DataPlaneProcess:
    """Launch ``python -m data_plane`` on ``listen`` (port 0: any) and wait until it is serving."""
    workdir = Path(tempfile.mkdtemp(prefix="odock-dp-"))
    ready = workdir / "ready.json"
    env = data_plane_env(cp_address, node_token, pepper, ready, listen=listen, extra_env=extra_env)
    stderr_path = workdir / "stderr.log"
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "data_plane", "--workers", str(workers)],
            env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )  # fmt: skip
    dp = DataPlaneProcess(proc, "", env, workdir, stderr_path)
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if ready.exists():
            dp.url = "http://" + json.loads(ready.read_text())["http"]
            return dp
        if proc.poll() is not None:
            raise RuntimeError(f"data plane exited with {proc.returncode}:\n{dp.stderr_text()[-4000:]}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.1)
    dp.kill()
    raise RuntimeError(f"data plane not ready after {timeout}s:\n{dp.stderr_text()[-4000:]}")
