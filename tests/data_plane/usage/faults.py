"""A disk that fails like real ones, behind the spool's ``Disk`` seam.

- ``capacity``: bytes the disk can still take; a write that does not fit is
  *short* (the kernel writes what fits and returns the count), the next one
  fails with ``ENOSPC``. Truncating and deleting give space back.
- ``fail_with``: an errno for every create and write (``EROFS``: a read-only
  remount, ``EIO``...).
- ``fail_sync_with``: an errno for ``fdatasync``.

In a data-plane process (``python -m tests.data_plane.usage.faults <data_plane args>``) the
modes come from the file named by ``ODOCK_TEST_DISK_FAULTS``, re-read at every
call, so a test can break and mend the disk of a running node: empty = healthy,
``rofs`` = read-only, ``full <bytes>`` = that much room left (then ENOSPC).
"""

from __future__ import annotations

import errno
import os
import runpy
import sys
from pathlib import Path
from typing import Any

from data_plane.usage.disk import Disk

CONTROL_ENV = "ODOCK_TEST_DISK_FAULTS"


class FaultyDisk(Disk):
    """A ``Disk`` with a byte budget and injectable errors."""

    def __init__(self, capacity: int = 1 << 62, fail_with: int = 0, fail_sync_with: int = 0) -> None:
        self.capacity = capacity
        self.fail_with = fail_with
        self.fail_sync_with = fail_sync_with

    def _check(self) -> None:
        if self.fail_with:
            raise OSError(self.fail_with, os.strerror(self.fail_with))

    def open(self, path: Any, flags: int, mode: int = 0o777) -> int:  # type: ignore[override]
        if flags & os.O_CREAT:
            self._check()
        return os.open(path, flags, mode)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:  # type: ignore[override]
        self._check()
        if self.capacity <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.pwrite(fd, data[: self.capacity], offset)
        self.capacity -= n
        return n

    def fdatasync(self, fd: int) -> None:  # type: ignore[override]
        if self.fail_sync_with:
            raise OSError(self.fail_sync_with, os.strerror(self.fail_sync_with))
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self.capacity += max(0, os.fstat(fd).st_size - length)
        os.ftruncate(fd, length)

    def unlink(self, path: Any) -> None:  # type: ignore[override]
        try:
            self.capacity += os.stat(path).st_size
        except OSError:
            pass
        os.unlink(path)


class ControlledDisk(FaultyDisk):
    """A FaultyDisk whose mode is read from a control file before every call."""

    def __init__(self, control: Path) -> None:
        super().__init__()
        self._control = control
        self._mode = ""

    def _sync_mode(self) -> None:
        try:
            mode = self._control.read_text().strip()
        except FileNotFoundError:
            mode = ""
        if mode == self._mode:
            return
        self._mode = mode
        self.fail_with = errno.EROFS if mode == "rofs" else 0
        self.capacity = int(mode.split()[1]) if mode.startswith("full") else 1 << 62

    def _check(self) -> None:
        self._sync_mode()
        super()._check()

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:  # type: ignore[override]
        self._sync_mode()
        return super().pwrite(fd, data, offset)


def install(control: Path) -> None:
    """Make every Spool of this process use a ControlledDisk (the spool's default ``Disk()``)."""
    disk = ControlledDisk(control)
    for name in ("open", "pwrite", "fdatasync", "ftruncate", "unlink"):
        setattr(Disk, name, staticmethod(getattr(disk, name)))


if __name__ == "__main__":
    install(Path(os.environ[CONTROL_ENV]))
    sys.argv = ["data_plane", *sys.argv[1:]]
    runpy.run_module("data_plane", run_name="__main__", alter_sys=True)
