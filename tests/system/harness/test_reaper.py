"""The session reaper: whatever a process started through ``tests.support.spawn`` dies with it.

The owners here start ``sleep`` rather than planes (cheap); ``test_orphans.py`` does it with planes.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.system.harness.procs import Proc, group_members, run_owner, wait_gone, wait_json

OWNER = '''
import json, sys, threading, time
from pathlib import Path
from tests.support import spawn

out = Path(sys.argv[1])
pids = []


def start():  # from a thread that ends at once, as with asyncio.to_thread
    pids.append(spawn.popen(["sleep", "60"]).pid)
    pids.append(spawn.popen(["sh", "-c", "sleep 60 & sleep 60 & wait"]).pid)


thread = threading.Thread(target=start)
thread.start()
thread.join()
out.with_suffix(".tmp").write_text(json.dumps({"children": pids, "group": [spawn.session_group()]}))
out.with_suffix(".tmp").rename(out)
for _ in range(6000):  # "hold": until killed; "exit": until told to (a "go" file), then exit normally
    if sys.argv[2] == "exit" and Path("go").exists():
        break
    time.sleep(0.01)
'''


def _members(started: dict[str, Any]) -> list[Proc]:
    """The owner's session group once its children and grandchildren are all in it."""
    (group,) = started["group"]
    deadline = time.monotonic() + 10
    while len(members := group_members(group)) < 5:  # reaper, sleep, sh and its two sleeps
        assert time.monotonic() < deadline, members
        time.sleep(0.01)
    assert {p.pid for p in members} >= {*started["children"], group}
    return members


def test_sigkilled_owner_takes_children_and_grandchildren_along(tmp_path: Path) -> None:
    owner = run_owner(OWNER, tmp_path, args=[str(tmp_path / "pids.json"), "hold"])
    started = wait_json(tmp_path / "pids.json", owner, timeout=30)
    members = _members(started)
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    elapsed, left = wait_gone(members, timeout=10)
    assert not left, f"still running 10 s after the owner was killed: {left}"
    assert elapsed < 2.0, f"took {elapsed:.2f}s"


def test_owner_exiting_normally_takes_a_leaked_child_along(tmp_path: Path) -> None:
    owner = run_owner(OWNER, tmp_path, args=[str(tmp_path / "pids.json"), "exit"])
    started = wait_json(tmp_path / "pids.json", owner, timeout=30)
    members = _members(started)
    (tmp_path / "go").touch()
    assert owner.wait(timeout=30) == 0
    elapsed, left = wait_gone(members, timeout=10)
    assert not left and elapsed < 2.0, (elapsed, left)
