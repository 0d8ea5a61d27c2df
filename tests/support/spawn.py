"""Start plane processes for tests: one session process group, readiness, stop and kill.

Every process started here joins one process group led by a reaper (``reaper.py``) that
holds a pidfd of this process: when this process exits, however it exits, the reaper
kills what is left in the group (plane processes, their workers, PostgreSQL). That works
whichever thread started the child, unlike a parent-death signal (``PR_SET_PDEATHSIG``
fires when the spawning *thread* exits, and tests start planes from worker threads).

    plane, ready = launch(MyPlane, [sys.executable, "-m", "x"], env, workdir, timeout=30)
    ...
    assert plane.stop() == 0
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
REAPER = Path(__file__).with_name("reaper.py")
READY_FILE = "ready.json"
READY_POLL_S = 0.01  # a stat() per poll: cheap, and a plane is seen ready within 10 ms
STDERR_TAIL_CHARS = 4000

_reaper_lock = threading.Lock()
_reaper: tuple[int, int] | None = None  # (owner pid, reaper pid)


def _reaper_alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False  # reaped by someone else: gone


def _inheritable_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.get_inheritable(int(name)):
                fds.append(int(name))
        except OSError:
            pass  # the directory's own descriptor, closed by now
    return fds


def session_group() -> int:
    """The process group of this session's reaper (started on first use, restarted if it died)."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper[0] == os.getpid() and _reaper_alive(_reaper[1]):
            return _reaper[1]
        pidfd = os.pidfd_open(os.getpid())
        # Above 3: a dup2 onto itself would keep close-on-exec, and the reaper would get no pidfd.
        owner = fcntl.fcntl(pidfd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(pidfd)
        devnull = os.open(os.devnull, os.O_RDWR)
        actions: list[tuple[int, ...]] = [(os.POSIX_SPAWN_DUP2, devnull, fd) for fd in (0, 1, 2)]
        actions.append((os.POSIX_SPAWN_DUP2, owner, 3))
        # Close what this process inherited and passes on (posix_spawn has no close_fds): the
        # reaper outlives it and must not hold, say, the write end of a pipe someone reads.
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds() if fd > 3]
        try:
            # posix_spawn, not Popen: nothing here ever waits for the reaper, and an unwaited
            # Popen warns (an error under our warning filters) when collected at interpreter exit.
            pid = os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", str(REAPER)], {},
                                 file_actions=actions, setpgroup=0)  # fmt: skip
        finally:
            os.close(owner)
            os.close(devnull)
        _reaper = (os.getpid(), pid)
        return pid


def popen(argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` in the session group, so the child dies with this process."""
    try:
        return subprocess.Popen(argv, process_group=session_group(), **kwargs)
    except PermissionError:
        # The reaper died between the check and the spawn (its group is gone): start a new one.
        return subprocess.Popen(argv, process_group=session_group(), **kwargs)


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Wait for ``process`` to exit and reap it; ``subprocess.TimeoutExpired`` after ``timeout``.

    Sleeps on a pidfd, so the caller wakes at the exit, not at the next step of
    ``Popen.wait``'s polling (up to 50 ms later).
    """
    if process.poll() is None:
        try:
            pidfd = os.pidfd_open(process.pid)
        except ProcessLookupError:
            pass  # already exited (and reaped by another thread)
        else:
            try:
                poller = select.poll()  # not select(): that fails on descriptors numbered past 1023
                poller.register(pidfd, select.POLLIN)
                poller.poll(timeout * 1000)
            finally:
                os.close(pidfd)
        return process.wait(timeout=0.5)
    return process.returncode


def new_workdir(prefix: str) -> Path:
    """A fresh temporary work directory for one process (removed when it is stopped)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def python_path() -> str:
    """PYTHONPATH for a plane: the repository, then the caller's."""
    return os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))


@dataclass
class PlaneProcess:
    """A started plane process: its Popen, environment, work directory and stderr log."""

    NAME: ClassVar[str] = "plane"

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    workdir: Path
    stderr_path: Path
    _stderr_cache: str | None = field(default=None, init=False, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr_text(self) -> str:
        """Everything the process wrote to stderr so far (kept after it is stopped)."""
        if self._stderr_cache is not None:
            return self._stderr_cache
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``sig`` and wait; returns the exit code (kills it after ``timeout``)."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                wait_exit(self.process, timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"{self.NAME} ignored signal {sig} for {timeout}s") from None
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

    def failure(self, what: str) -> str:
        """``what`` and the tail of the process's stderr, for an error message."""
        tail = self.stderr_text()[-STDERR_TAIL_CHARS:].rstrip() or "(nothing)"
        return f"{self.NAME} (pid {self.pid}) {what}; argv {self.process.args!r}; stderr tail:\n{tail}"


P = TypeVar("P", bound=PlaneProcess)


def launch(
    cls: type[P], argv: Sequence[str], env: dict[str, str], workdir: Path, *, timeout: float, **fields: Any
) -> tuple[P, dict[str, Any]]:
    """Start ``argv`` in ``workdir`` and wait for its ready file (``env["ODOCK_READY_FILE"]``).

    Returns the process object (``cls(..., **fields)``) and the ready file's JSON. On exit
    before ready or on timeout the child is killed, its work directory removed, and a
    RuntimeError carries the tail of its stderr.
    """
    ready = Path(env["ODOCK_READY_FILE"])
    stderr_path = workdir / "stderr.log"
    with open(stderr_path, "wb") as err:
        proc = popen(argv, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    plane = cls(process=proc, env=env, workdir=workdir, stderr_path=stderr_path, **fields)
    deadline = time.monotonic() + timeout
    while True:
        if ready.exists():
            return plane, json.loads(ready.read_text())
        if proc.poll() is not None:
            plane.kill()  # reaps it and removes the work directory, keeping stderr
            raise RuntimeError(plane.failure(f"exited with code {proc.returncode} before it was ready"))
        if time.monotonic() >= deadline:
            plane.kill()
            raise RuntimeError(plane.failure(f"not ready after {timeout}s"))
        time.sleep(READY_POLL_S)
