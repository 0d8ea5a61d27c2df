"""Run the scripts under deploy/ as the image would: as programs, with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.system.deploy.envcheck import DEPLOY, REPO

SCRIPTS = {
    "make-secrets": DEPLOY / "make-secrets",
    "odock-migrate": DEPLOY / "bin" / "odock-migrate",
    "odock-healthcheck": DEPLOY / "bin" / "odock-healthcheck",
}


def script_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without ODOCK_* variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ODOCK_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def run_script(
    name: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``deploy/.../name`` with this interpreter (the image's is on PATH as python3)."""
    return subprocess.run(
        [sys.executable, str(SCRIPTS[name]), *args],
        env=script_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
