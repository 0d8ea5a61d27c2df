"""Start the data plane as a real process (``python -m data_plane``) for tests.

dp = start_data_plane(cp.address, cp.node_token, cp.pepper)
...  # HTTP on dp.url
assert dp.stop() == 0

The process (and its workers) joins the session's process group (``tests/support/spawn.py``),
so it dies with pytest.
"""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.spawn import READY_FILE, REPO_ROOT, PlaneProcess, launch, new_workdir, python_path

__all__ = ["REPO_ROOT", "DataPlaneProcess", "data_plane_env", "start_data_plane"]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass
class DataPlaneProcess(PlaneProcess):
    """A running data-plane process (a supervisor when workers > 1)."""

    NAME = "data plane"

    url: str = ""
    metrics_url: str = ""  # the metrics listener ("": not serving one)

    def status(self) -> dict[str, object]:
        """The detailed status object, from the metrics listener's ``/readyz/details`` (whatever the
        HTTP status; with workers: ``{"ready": ..., "workers": [...]}``). The public /readyz has none."""
        assert self.metrics_url, "this data plane serves no metrics listener (ODOCK_DP_METRICS_LISTEN)"
        data: dict[str, object] = httpx.get(f"{self.metrics_url}/readyz/details", timeout=5).json()
        return data

    def public_status(self) -> httpx.Response:
        """The public port's /readyz answer."""
        return httpx.get(f"{self.url}/readyz", timeout=5)

    def wait_connected(self, timeout: float = 15.0) -> dict[str, object]:
        """Block until the node (every worker) is connected to the control plane (without a metrics
        listener: until the public /readyz says ready, which at start means connected)."""
        deadline = time.monotonic() + timeout
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            if not self.metrics_url:
                resp = self.public_status()
                status = resp.json()
                if resp.status_code == 200:
                    return status
            else:
                status = self.status()
                workers = status.get("workers", [status])
                if isinstance(workers, list) and all(w.get("control_plane") == "connected" for w in workers):
                    return status
            time.sleep(0.02)
        raise AssertionError(f"data plane never connected: {status}\n{self.stderr_text()[-3000:]}")


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
        "PYTHONPATH": python_path(),
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
    """Launch ``python -m data_plane`` on ``listen`` (port 0: any) and wait until it is serving.

    Its metrics listener (where the status details are) is on 127.0.0.1:0 unless ``extra_env``
    sets ``ODOCK_DP_METRICS_LISTEN`` ("": none).
    """
    workdir = new_workdir("odock-dp-")
    extra = {"ODOCK_DP_METRICS_LISTEN": "127.0.0.1:0", **(extra_env or {})}
    env = data_plane_env(cp_address, node_token, pepper, workdir / READY_FILE, listen=listen, extra_env=extra)
    dp, ready = launch(DataPlaneProcess, [sys.executable, "-m", "data_plane", "--workers", str(workers)], env,
                       workdir, timeout=timeout)  # fmt: skip
    dp.url = "http://" + str(ready["http"])
    dp.metrics_url = "http://" + str(ready["metrics"]) if ready.get("metrics") else ""
    return dp
