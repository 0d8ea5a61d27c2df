"""Looking at processes from the outside: liveness that survives pid reuse, group members, owners to kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.spawn import REPO_ROOT


@dataclass(frozen=True)
class Proc:
    """A process identified by pid and start time (so a reused pid is not mistaken for it)."""

    pid: int
    start: int
    name: str

    @classmethod
    def of(cls, pid: int) -> Proc:
        """The live process ``pid`` (AssertionError when it is not running)."""
        stat = _stat(pid)
        assert stat is not None and stat[1] not in ("Z", "X"), f"process {pid} is not running"
        return cls(pid, stat[3], stat[0])

    def alive(self) -> bool:
        """Still running (a zombie waiting for its new parent to reap it counts as dead)."""
        stat = _stat(self.pid)
        return stat is not None and stat[3] == self.start and stat[1] not in ("Z", "X")


def _stat(pid: int) -> tuple[str, str, int, int] | None:
    """(command name, state, process group, start time) from /proc/PID/stat, None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return raw[raw.find("(") + 1 : raw.rfind(")")], fields[0], int(fields[2]), int(fields[19])


def group_members(pgid: int) -> list[Proc]:
    """Every live process in process group ``pgid``."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] == pgid and stat[1] not in ("Z", "X"):
                found.append(Proc(int(entry.name), stat[3], stat[0]))
    return found


def process_group(pid: int) -> int:
    """The process group of the live process ``pid``."""
    stat = _stat(pid)
    assert stat is not None, f"process {pid} is gone"
    return stat[2]


def wait_gone(procs: list[Proc], timeout: float) -> tuple[float, list[Proc]]:
    """Poll until none of ``procs`` runs; (seconds it took, those still running at ``timeout``)."""
    started = time.monotonic()
    while True:
        left = [p for p in procs if p.alive()]
        elapsed = time.monotonic() - started
        if not left or elapsed >= timeout:
            return elapsed, left
        time.sleep(0.02)


def run_owner(script: str, cwd: Path, *, args: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``script`` (Python source) as its own process, with the repository importable."""
    path = cwd / "owner.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    log = open(cwd / "owner.log", "wb")  # noqa: SIM115 (the child holds it; closed below)
    try:
        return subprocess.Popen([sys.executable, str(path), *(args or [])], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    finally:
        log.close()


def wait_json(path: Path, owner: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """The JSON ``owner`` writes to ``path`` (atomically) once it has started what it starts."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        log = path.parent / "owner.log"
        assert owner.poll() is None, f"owner exited with {owner.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"owner not ready after {timeout}s:\n{log.read_text()[-4000:]}"
        time.sleep(0.02)
    data: dict[str, Any] = json.loads(path.read_text())
    return data
