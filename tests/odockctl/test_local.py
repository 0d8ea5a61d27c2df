"""``odock up`` / ``odock env``: both planes as children of one command, on a temp state dir."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.odockctl.runner import ODOCK, Ctl

READY_TIMEOUT_S = 60.0
pytestmark = pytest.mark.slow


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}


def _start(state_dir: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*ODOCK, "up", "--state-dir", str(state_dir), "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip


def _read_until_ready(proc: subprocess.Popen[str]) -> list[str]:
    """stdout lines up to the 'stops both planes' line (a reader thread; bounded wait)."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in iter(stdout.readline, ""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line.rstrip("\n"))
        if "stops both planes" in line:
            return seen
    proc.kill()
    proc.wait(timeout=30)
    raise AssertionError(f"odock up not ready: {seen}")


def _exports(state_dir: Path) -> dict[str, str]:
    out = subprocess.run([*ODOCK, "env", "--state-dir", str(state_dir)], capture_output=True, text=True,
                         env=_env(), timeout=30, check=True).stdout  # fmt: skip
    exports = {}
    for line in out.splitlines():
        assert line.startswith("export ")
        key, _, value = line.removeprefix("export ").partition("=")
        exports[key] = shlex.split(value)[0]
    return exports


def test_up_runs_both_planes_and_stops_on_sigterm(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    proc = _start(state_dir)
    try:
        banner = _read_until_ready(proc)
        assert any("generated new secrets" in line for line in banner)
        assert any("odockctl apply -f deploy/examples/gateway.yaml" in line for line in banner)
        assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
        secrets_file = state_dir / "secrets.env"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        text = secrets_file.read_text()
        for name in ("ODOCK_KEKS=", "ODOCK_KEY_PEPPER=", "ODOCK_ADMIN_TOKEN=", "ODOCK_NODE_TOKEN="):
            assert name in text
        assert not any(line.split("=", 1)[1] in "\n".join(banner) for line in text.splitlines()[1:])

        exports = _exports(state_dir)
        endpoints = json.loads((state_dir / "endpoints.json").read_text())
        assert exports["ODOCK_CP_ADDRESS"] == endpoints["grpc"]
        assert exports["ODOCK_BASE_URL"] == f"http://{endpoints['http']}/v1"
        ctl = Ctl(exports["ODOCK_CP_ADDRESS"], exports["ODOCK_ADMIN_TOKEN"])
        path = tmp_path / "f.yaml"
        path.write_text("orgs:\n  - name: local\n    keys: [{name: k, all_models: true}]\n")
        assert ctl.ok("apply", "-f", str(path)).lines()[0] == "org local: created"
        assert "local" in ctl.ok("org", "list").out
        with urllib.request.urlopen(f"{exports['ODOCK_GATEWAY_URL']}/healthz", timeout=10) as response:
            assert response.status == 200

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert proc.stderr is not None and proc.stderr.read() == ""
        assert not (state_dir / "endpoints.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_up_reuses_secrets_and_exits_nonzero_when_a_plane_dies(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    first_token = "adm-" + "t" * 40
    (state_dir / "secrets.env").write_text(
        "# existing\nODOCK_KEKS=local1=" + "A" * 43 + "=\nODOCK_KEY_PEPPER=" + "B" * 43 + "=\n"
        f"ODOCK_ADMIN_TOKEN={first_token}\nODOCK_NODE_TOKEN=node-{'n' * 40}\n"
    )
    os.chmod(state_dir / "secrets.env", 0o644)
    proc = _start(state_dir)
    try:
        banner = _read_until_ready(proc)
        assert any("using secrets from" in line for line in banner)
        assert stat.S_IMODE((state_dir / "secrets.env").stat().st_mode) == 0o600
        assert _exports(state_dir)["ODOCK_ADMIN_TOKEN"] == first_token
        cp_pid = json.loads((state_dir / "run" / "control-plane.ready.json").read_text())["pid"]
        dp_pid = json.loads((state_dir / "run" / "data-plane.ready.json").read_text())["pid"]

        second = subprocess.run([*ODOCK, "up", "--state-dir", str(state_dir)], capture_output=True, text=True,
                                env=_env(), timeout=30, check=False)  # fmt: skip
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"odock: error: another `odock up` is already using {state_dir}"
        ]

        os.kill(dp_pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == 1
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert err.splitlines() == [err.strip()] and err.startswith(
            "odock: error: data-plane was killed by signal 9"
        )
        with pytest.raises(ProcessLookupError):
            os.kill(cp_pid, 0)  # the control plane was stopped (and reaped) too
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_env_without_state_is_one_line_error(tmp_path: Path) -> None:
    result = subprocess.run([*ODOCK, "env", "--state-dir", str(tmp_path / "none")], capture_output=True, text=True,
                            env=_env(), timeout=30, check=False)  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "odock up" in result.stderr


def test_up_reports_a_plane_that_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*ODOCK, "up", "--state-dir", str(tmp_path / "s"), "--grpc", f"127.0.0.1:{port}", "--http", "127.0.0.1:0"],
            capture_output=True, text=True, env=_env(), timeout=90, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("odock: error: control-plane exited with status"), lines
    assert "before control-plane was ready" in lines[0] and "Traceback" not in result.stderr
