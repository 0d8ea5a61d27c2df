"""The file calls of the usage spool, behind a seam, and the few multi-call steps it needs."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class Disk:
    """The file calls the spool makes: a seam, so tests can fail them like a full or read-only disk."""

    open = staticmethod(os.open)
    pwrite = staticmethod(os.pwrite)
    pread = staticmethod(os.pread)
    fdatasync = staticmethod(os.fdatasync)
    fsync = staticmethod(os.fsync)
    ftruncate = staticmethod(os.ftruncate)
    rename = staticmethod(os.rename)
    unlink = staticmethod(os.unlink)


def why(exc: OSError) -> str:
    """A short, bounded reason for a failed file call (the errno's name)."""
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def create_locked(disk: Disk, directory: Path, name: str) -> int:
    """Create ``directory/name`` locked (``flock``) and durable (directory fsync'd); its fd.

    Created under a temporary name first, so a file with the final name is always locked by its
    writer until it is complete enough to adopt. Nothing is left behind on failure.
    """
    tmp = directory / f".{name}.tmp"
    path = directory / name
    fd = disk.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        disk.rename(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            disk.fsync(dir_fd)  # the new name survives a crash along with the data
        finally:
            os.close(dir_fd)
    except OSError:
        os.close(fd)
        for leftover in (tmp, path):
            try:
                disk.unlink(leftover)
            except OSError:
                pass
        raise
    return fd


def lock_unowned(disk: Disk, path: Path) -> int | None:
    """``path`` opened and locked if nobody holds it (its writer died or left it); else None."""
    try:
        fd = disk.open(path, os.O_RDWR)
    except OSError:
        return None  # deleted meanwhile, or unreadable: another worker may manage
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # deleted by its owner between listing and locking
        os.close(fd)
        return None
    return fd


def dir_bytes(directory: Path, suffix: str) -> int:
    """Bytes of the files ending in ``suffix`` in ``directory`` (0 when it cannot be listed)."""
    total = 0
    try:
        with os.scandir(directory) as it:
            for item in it:
                if item.name.endswith(suffix):
                    try:
                        total += item.stat().st_size
                    except OSError:
                        continue
    except OSError:
        return 0
    return total
