"""``--version`` on the four installed programs, run as the console scripts pip put in the venv."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PROGRAMS = ("odock", "odockctl", "control-plane", "data-plane")


@pytest.mark.parametrize("program", PROGRAMS)
def test_version_prints_the_installed_version_and_exits_0(program: str) -> None:
    # No ODOCK_* settings at all: --version must not need a configured plane.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    result = subprocess.run([str(BIN / program), "--version"], capture_output=True, text=True, env=env,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{program} {metadata.version('odock')}\n"


@pytest.mark.parametrize("program", PROGRAMS)
def test_help_lists_version(program: str) -> None:
    result = subprocess.run([str(BIN / program), "--help"], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL, check=False)  # fmt: skip
    assert result.returncode == 0 and "--version" in result.stdout
