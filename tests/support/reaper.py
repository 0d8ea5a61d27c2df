"""The session reaper: kills its process group once the process that started it has exited.

``tests/support/spawn.py`` starts one per test session as ``python -I -S reaper.py`` with a
pidfd of the owning process (pytest) on fd 3. The reaper leads a process group, every plane
(and PostgreSQL server) the session starts joins that group, and children they fork inherit
it. When the owner exits, however it exits (SIGKILL included), the pidfd turns readable and
the reaper kills every remaining member: SIGKILL, except PostgreSQL, which first gets SIGQUIT
(its immediate shutdown, which also releases its shared memory). Stdlib only, no imports from
the repository: it must start fast and outlive everything else in the session.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator

OWNER_FD = 3
WINDOW_S = 5.0  # give up after this long (a member that will not die is not ours to wait for)
QUIT_GRACE_S = 1.0  # PostgreSQL's time to act on SIGQUIT before SIGKILL
SCAN_INTERVAL_S = 0.05
# Empty scans in a row before exiting: a child forked just before the owner died must join first.
QUIET_SCANS = 3


def members(pgid: int) -> Iterator[tuple[int, str]]:
    """(pid, command name) of every live process in group ``pgid`` except this one."""
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
        except OSError:
            continue  # exited meanwhile
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            yield int(entry.name), comm


def kill_group(pgid: int) -> None:
    """Kill every member of ``pgid`` until a few scans in a row find none (bounded by WINDOW_S)."""
    started = time.monotonic()
    quit_sent: dict[int, float] = {}
    quiet = 0
    while quiet < QUIET_SCANS and time.monotonic() - started < WINDOW_S:
        found = list(members(pgid))
        quiet = 0 if found else quiet + 1
        now = time.monotonic()
        for pid, comm in found:
            sig = signal.SIGKILL
            if comm == "postgres" and now - quit_sent.setdefault(pid, now) < QUIT_GRACE_S:
                if quit_sent[pid] != now:
                    continue  # SIGQUIT already sent; let it shut down
                sig = signal.SIGQUIT
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(SCAN_INTERVAL_S)


def main() -> None:
    """Wait for the owner (pidfd on fd 3) to exit, then empty this process's group."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # a terminal's Ctrl-C or hang-up is for pytest, not for us
    select.select([OWNER_FD], [], [])
    kill_group(os.getpgid(0))


if __name__ == "__main__":
    main()
