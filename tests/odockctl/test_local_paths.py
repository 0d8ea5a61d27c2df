"""``odock up`` runs its planes inside the state directory: every path they get must be absolute."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from odockctl.local import child_env
from tests.odockctl.runner import ODOCK
from tests.odockctl.test_local import _env, _read_until_ready


def test_child_env_makes_inherited_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    inherited = {
        "ODOCK_USAGE_SPOOL_DIR": "spool", "ODOCK_SOME_SECRET_FILE": "secrets/x", "ODOCK_FUTURE_PATH": "./p",
        "PROMETHEUS_MULTIPROC_DIR": "metrics", "PYTHONPATH": f"lib{os.pathsep}/abs{os.pathsep}",
        "ODOCK_LOG_LEVEL": "info", "HOME": "relative-home", "ODOCK_EMPTY_DIR": "",
        "ODOCK_DATABASE_URL": "sqlite:///theirs.db",  # ours replaces it
    }  # fmt: skip
    env = child_env(inherited, {"ODOCK_DATABASE_URL": "sqlite:////abs/odock.db"})
    assert env["ODOCK_USAGE_SPOOL_DIR"] == str(tmp_path / "spool")
    assert env["ODOCK_SOME_SECRET_FILE"] == str(tmp_path / "secrets" / "x")
    assert env["ODOCK_FUTURE_PATH"] == str(tmp_path / "p")
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "lib"), "/abs", ""])
    assert (env["ODOCK_LOG_LEVEL"], env["HOME"], env["ODOCK_EMPTY_DIR"]) == ("info", "relative-home", "")
    assert env["ODOCK_DATABASE_URL"] == "sqlite:////abs/odock.db"


@pytest.mark.slow
def test_up_with_the_default_relative_state_dir(tmp_path: Path) -> None:
    # What `./scripts/up` does: no --state-dir, so ".odock" relative to where odock runs.
    proc = subprocess.Popen([*ODOCK, "up", "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    try:
        banner = _read_until_ready(proc)
        assert any("eval \"$(odock env)\"" in line for line in banner)  # the short form for the default
        state = tmp_path / ".odock"
        for plane in ("control-plane", "data-plane"):
            ready = json.loads((state / "run" / f"{plane}.ready.json").read_text())
            assert Path(f"/proc/{ready['pid']}/cwd").resolve() == state.resolve()
        assert (state / "odock.db").is_file() and (state / "odock-usage-spool").is_dir()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
