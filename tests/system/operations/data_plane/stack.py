"""Planes for the operability tests: a control plane with metrics and JSON logs, data planes
with their /metrics listener, JSON logs and fast usage batching, and log-line helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.data_plane.usage.stack import USAGE_ENV
from tests.support.dataplane import DataPlaneProcess, start_data_plane
from tests.support.planes import ControlPlaneProcess, start_control_plane
from tests.support.secrets import PlaneSecrets

REQUEST_LOGGER = "odock.data_plane.request"
# Every request line carries these (docs/operations.md).
REQUEST_FIELDS = frozenset({
    "request_id", "org_id", "key_id", "model", "family", "endpoint", "method", "status", "outcome",
    "streamed", "latency_ms", "overhead_ms", "upstream_first_byte_ms", "input_tokens", "output_tokens",
    "cached_input_tokens", "node_id",
})  # fmt: skip


@dataclass
class OpsControlPlane:
    """A control-plane process and its /metrics address."""

    process: ControlPlaneProcess
    metrics: str


@dataclass
class OpsDataPlane:
    """A data-plane process (supervisor with workers > 1) and its /metrics address."""

    process: DataPlaneProcess
    metrics: str | None  # HOST:PORT of /metrics (None: not served)

    @property
    def url(self) -> str:
        return self.process.url

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line parsed as one JSON object (fails on a line that is not)."""
        return [json.loads(line) for line in self.process.stderr_text().splitlines() if line.strip()]

    def request_lines(self) -> list[dict[str, Any]]:
        """The per-request log lines."""
        return [r for r in self.log_records() if r.get("logger") == REQUEST_LOGGER]


def start_ops_cp(
    db: Path, *, secrets: PlaneSecrets | None = None, extra_env: Mapping[str, str] | None = None
) -> OpsControlPlane:
    """A control plane on SQLite ``db`` with JSON logs at debug and metrics on 127.0.0.1:0."""
    env = {"ODOCK_CP_METRICS_LISTEN": "127.0.0.1:0", "ODOCK_LOG_FORMAT": "json", "ODOCK_LOG_LEVEL": "debug",
           **(extra_env or {})}  # fmt: skip
    cp = start_control_plane(f"sqlite:///{db}", extra_env=env, secrets=secrets)
    ready = json.loads(Path(cp.env["ODOCK_READY_FILE"]).read_text())
    return OpsControlPlane(cp, str(ready["metrics"]))


def start_ops_dp(cp: ControlPlaneProcess, spool: Path, *, workers: int = 1, **env: str) -> OpsDataPlane:
    """A connected data plane: metrics on 127.0.0.1:0, JSON logs, fast usage batching (``env`` overrides)."""
    extra = {
        **USAGE_ENV,
        "ODOCK_USAGE_SPOOL_DIR": str(spool),
        "ODOCK_DP_METRICS_LISTEN": "127.0.0.1:0",
        "ODOCK_LOG_FORMAT": "json",
        **env,
    }
    dp = start_data_plane(cp.address, cp.node_token, cp.pepper, extra_env=extra, workers=workers)
    try:
        dp.wait_connected()
        ready = json.loads(Path(dp.env["ODOCK_READY_FILE"]).read_text())
        return OpsDataPlane(dp, ready.get("metrics"))
    except BaseException:
        dp.kill()
        raise
