"""A pytest run that is SIGKILLed leaves no plane, worker or PostgreSQL process behind."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

from tests.system.harness.procs import group_members, process_group, run_owner, wait_gone, wait_json

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The inner test starts everything from a thread that then ends (as asyncio.to_thread does),
# checks it all still serves, reports the pids and waits to be killed.
INNER_TEST = '''
import json, socket, threading, time
from pathlib import Path

import psycopg

from tests.support.dataplane import start_data_plane
from tests.support.planes import start_control_plane
from tests.support.postgres import start_postgres

OUT = Path({out!r})


def test_hold_planes(tmp_path):
    started = {{}}

    def start():
        started["pg"] = start_postgres()
        cp = started["cp"] = start_control_plane(f"sqlite:///{{tmp_path / 'cp.db'}}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        started["dp"] = start_data_plane(cp.address, cp.node_token, cp.pepper, workers=2,
                                         listen=f"127.0.0.1:{{port}}")

    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
    pg, cp, dp = started["pg"], started["cp"], started["dp"]
    dp.wait_connected()
    with psycopg.connect(pg.admin_conninfo, autocommit=True) as conn:
        conn.execute("SELECT 1")
    report = {{"cp": [cp.pid], "dp": [dp.pid], "pg": [pg.process.pid],
              "dirs": [str(cp.workdir), str(dp.workdir), str(pg.root)]}}
    OUT.with_suffix(".tmp").write_text(json.dumps(report))
    OUT.with_suffix(".tmp").rename(OUT)
    time.sleep(90)
'''

OWNER = '''
import sys
import pytest

sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "-c", sys.argv[1], "--rootdir", sys.argv[2], sys.argv[3]]))
'''


def test_sigkilled_pytest_leaves_no_plane_behind(tmp_path: Path) -> None:
    out = tmp_path / "pids.json"
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    postgres: needs PostgreSQL\n")
    inner = tmp_path / "test_inner.py"
    inner.write_text(INNER_TEST.format(out=str(out)))
    owner = run_owner(OWNER, tmp_path, args=[str(tmp_path / "pytest.ini"), str(tmp_path), str(inner)])
    try:
        started = wait_json(out, owner, timeout=90)
        members = group_members(process_group(started["cp"][0]))
        by_pid = {p.pid: p for p in members}
        assert {started["cp"][0], started["dp"][0], started["pg"][0]} <= by_pid.keys(), members
        planes = [p for p in members if p.name != "postgres"]
        postgres = [p for p in members if p.name == "postgres"]
        assert len(planes) >= 5, planes  # reaper, control plane, data-plane supervisor and 2 workers
        assert postgres, members

        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        planes_s, _ = wait_gone(planes, timeout=10)
        rest_s, left = wait_gone(members, timeout=10)
        all_s = planes_s + rest_s
        assert not left, f"still running 10 s after pytest was killed: {left}"
        assert planes_s < 2.0, f"planes took {planes_s:.2f}s to die"
        assert all_s < 3.0, f"PostgreSQL took {all_s:.2f}s to die"  # SIGQUIT, then SIGKILL after 1 s
        print(f"planes gone {planes_s:.2f}s, everything {all_s:.2f}s after the SIGKILL", file=sys.stderr)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait(timeout=10)
        if out.exists():
            for d in wait_json(out, owner, timeout=1)["dirs"]:
                shutil.rmtree(d, ignore_errors=True)  # the killed run could not clean its work directories
